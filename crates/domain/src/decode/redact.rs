//! Masking, redaction and sanitising of untrusted payload text.
//!
//! Everything here is hand-written byte scanning: no regex engine is needed
//! for these shapes, and each pass allocates only when it changes something.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// What replaces a secret value.
pub(crate) const REDACTED: &str = "[redacted]";

/// Lowercase hex SHA-256 of the text's UTF-8 bytes.
pub(crate) fn sha256_hex(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The largest char boundary at or below `index`.
pub(crate) fn floor_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    let mut cut = index;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// The smallest char boundary at or above `index`.
fn ceil_boundary(text: &str, index: usize) -> usize {
    let mut cut = index.min(text.len());
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    cut
}

/// Masks a credential identity for display.
///
/// E-mail: the first three bytes of the local part, `***@`, then the domain
/// (`bob.ops@example.net` → `bob***@example.net`). Secret-looking values (no
/// space or slash, and `sk-`/`AIza` prefix or at least 32 bytes) keep only
/// their first and last four bytes (`m:sk-a...wxyz`). Anything else (a project
/// id, an auth file name) is shown as is.
pub(crate) fn mask_source(value: &str) -> Cow<'_, str> {
    if let Some(at) = value.find('@') {
        let keep = floor_boundary(value, at.min(3));
        return Cow::Owned(format!("{}***@{}", &value[..keep], &value[at + 1..]));
    }
    let looks_secret = !value.contains([' ', '/', '\\'])
        && (value.starts_with("sk-") || value.starts_with("AIza") || value.len() >= 32);
    if !looks_secret {
        return Cow::Borrowed(value);
    }
    if value.len() <= 8 {
        return Cow::Borrowed("m:****");
    }
    let head = floor_boundary(value, 4);
    let tail = ceil_boundary(value, value.len() - 4);
    Cow::Owned(format!("m:{}...{}", &value[..head], &value[tail..]))
}

/// Masks a value known to be a secret, whatever its shape: the first and last four
/// bytes of a long one (`m:abcd...wxyz`), nothing of one of eight bytes or fewer.
pub(crate) fn mask_secret(value: &str) -> Cow<'_, str> {
    if value.is_empty() {
        return Cow::Borrowed(value);
    }
    if value.len() <= 8 {
        return Cow::Borrowed("m:****");
    }
    if value.len() < 16 {
        let head = floor_boundary(value, 2);
        return Cow::Owned(format!("m:{}...", &value[..head]));
    }
    let head = floor_boundary(value, 4);
    let tail = ceil_boundary(value, value.len() - 4);
    Cow::Owned(format!("m:{}...{}", &value[..head], &value[tail..]))
}

/// Shortest literal [`remove_literals`] removes: shorter values would match ordinary
/// words.
const LITERAL_MINIMUM: usize = 6;

/// `text` with every occurrence of each of `literals` (of at least six bytes) replaced
/// by `[redacted]`: secrets known by value, such as the request's own client API key
/// echoed in an upstream's failure body.
pub(crate) fn remove_literals<'t, S: AsRef<str>>(text: &'t str, literals: &[S]) -> Cow<'t, str> {
    let mut current = Cow::Borrowed(text);
    for literal in literals {
        let literal = literal.as_ref().trim();
        if literal.len() < LITERAL_MINIMUM || literal == REDACTED || !current.contains(literal) {
            continue;
        }
        current = Cow::Owned(current.replace(literal, REDACTED));
    }
    current
}

/// True for object keys whose values are credentials and never stored:
/// compared lower-case after trimming, with `-` and spaces read as `_`.
pub(crate) fn is_secret_key(key: &str) -> bool {
    // Runs for every key of every payload, so it normalises into a stack
    // buffer instead of allocating.
    let mut buffer = [0_u8; 64];
    let Some(normalised) = lower_into(key.trim(), &mut buffer, true) else {
        return key.to_ascii_lowercase().contains("secret");
    };
    matches!(
        normalised,
        b"api_key"
            | b"apikey"
            | b"x_api_key"
            | b"x_goog_api_key"
            | b"authorization"
            | b"proxy_authorization"
            | b"cookie"
            | b"set_cookie"
            | b"access_token"
            | b"refresh_token"
            | b"id_token"
            | b"token"
            | b"password"
    ) || contains_bytes(normalised, b"secret")
}

/// ASCII-lowercases `text` into `buffer` (optionally mapping `-` and space to
/// `_`); `None` if it does not fit.
fn lower_into<'b>(text: &str, buffer: &'b mut [u8; 64], underscores: bool) -> Option<&'b [u8]> {
    let bytes = text.as_bytes();
    let target = buffer.get_mut(..bytes.len())?;
    for (slot, byte) in target.iter_mut().zip(bytes) {
        *slot = match byte {
            b'-' | b' ' if underscores => b'_',
            other => other.to_ascii_lowercase(),
        };
    }
    Some(target)
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Replaces every whitespace or non-printable character with a space,
/// collapses runs of spaces, trims, and caps the result at `limit` bytes
/// (cut at a character boundary, `...` appended).
pub(crate) fn sanitize_client_text(value: &str, limit: usize) -> Option<String> {
    // Common case: printable ASCII with single inner spaces, nothing to change.
    let bytes = value.as_bytes();
    let plain = !bytes.is_empty()
        && bytes.len() <= limit
        && bytes.first() != Some(&b' ')
        && bytes.last() != Some(&b' ')
        && bytes.iter().all(|byte| (0x20..0x7f).contains(byte))
        && !bytes.windows(2).any(|pair| pair == b"  ");
    if plain {
        return Some(value.to_string());
    }
    let mut out = String::with_capacity(value.len().min(limit));
    let mut pending_space = false;
    for character in value.chars() {
        if character.is_whitespace() || !is_graphic(character) {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(character);
    }
    if out.is_empty() {
        return None;
    }
    if out.len() > limit {
        let cut = floor_boundary(&out, limit.saturating_sub(3));
        out.truncate(cut);
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push_str("...");
    }
    Some(out)
}

/// Approximates Go's `unicode.IsGraphic`: no control, format, private-use or
/// non-character code points.
fn is_graphic(character: char) -> bool {
    let code = character as u32;
    !(character.is_control()
        || matches!(
            code,
            0x00AD
                | 0x061C
                | 0x180E
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0xE000..=0xF8FF
                | 0xF0000..=0x10FFFF
                | 0xFDD0..=0xFDEF
        )
        || code & 0xFFFE == 0xFFFE)
}

/// Cuts `text` to at most `limit` bytes at a character boundary, appending
/// `...` when something was cut.
pub(crate) fn truncate_with_marker(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    let cut = floor_boundary(text, limit);
    Cow::Owned(format!("{}...", &text[..cut]))
}

/// Bytes of failure text that are redacted to build a summary. A summary
/// keeps 4096 bytes; redaction can only shorten secrets to `[redacted]`, so
/// twice that is plenty, and huge bodies are not scanned in full.
const SUMMARY_SCAN_LIMIT: usize = 8192;
/// Largest stored summary before `...`.
pub(crate) const SUMMARY_LIMIT: usize = 4096;

/// The displayable summary of a failure text: trimmed, secrets redacted,
/// capped at 4096 bytes plus `...`. `None` when nothing is left.
pub(crate) fn summarize(text: &str) -> Option<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    let scanned = if trimmed.len() > SUMMARY_SCAN_LIMIT {
        // Drop the token cut in half at the scan limit: a partial key might
        // be too short for the patterns below to recognise it.
        let cut = floor_boundary(trimmed, SUMMARY_SCAN_LIMIT);
        let head = &trimmed[..cut];
        let token_start = head
            .rfind(|c: char| c.is_whitespace() || "\"',;&=:{}[]()<>".contains(c))
            .map_or(0, |i| i + 1);
        // A very long run without delimiters is not a key; keep it.
        if head.len() - token_start <= 256 {
            &head[..token_start]
        } else {
            head
        }
    } else {
        trimmed
    };
    let redacted = redact_secrets(scanned);
    let capped = truncate_with_marker(redacted.trim(), SUMMARY_LIMIT);
    if capped.is_empty() {
        None
    } else {
        Some(capped.into_owned())
    }
}

/// Largest stored dead-letter payload before `...`: far above any real CPA usage item,
/// so a malformed one is kept whole for diagnosis, but an absurd one cannot fill the disk.
pub(crate) const DEAD_LETTER_LIMIT: usize = 64 * 1024;

/// A dead-letter payload as it may be stored: the item's text with every credential
/// redacted the way failure summaries are ([`redact_secrets`]: client API keys under
/// `api_key`/`apiKey`/`key`, `Authorization`, cookies, tokens, `Bearer …`, well-known
/// key shapes, e-mail local parts) and `source` values masked as stored events mask
/// them ([`mask_source`]), capped at [`DEAD_LETTER_LIMIT`] bytes plus `...` (a token cut
/// in half at the cap is dropped). Everything else stays, so the reason can be checked
/// against the item. Applying it again changes nothing.
pub(crate) fn dead_letter_payload(text: &str) -> String {
    let (head, cut) = if text.len() > DEAD_LETTER_LIMIT {
        let end = floor_boundary(text, DEAD_LETTER_LIMIT);
        let head = &text[..end];
        let token_start = head
            .rfind(|c: char| c.is_whitespace() || "\"',;&=:{}[]()<>".contains(c))
            .map_or(0, |i| i + 1);
        if head.len() - token_start <= 256 {
            (&head[..token_start], true)
        } else {
            (head, true)
        }
    } else {
        (text, false)
    };
    // Secrets known by value (a client API key, a secret-looking source) are removed
    // wherever they appear, also where an upstream's failure body echoes them.
    let literals = member_values(head, |name, value| {
        (is_secret_key(name) || name == "key")
            || (name == "source"
                && !value.contains('@')
                && matches!(mask_source(value), Cow::Owned(_)))
    });
    let masked = mask_source_members(head).map_or(Cow::Borrowed(head), Cow::Owned);
    let without_literals = remove_literals(&masked, &literals);
    let mut out = redact_secrets(&without_literals).into_owned();
    if cut {
        out.push_str("...");
    }
    out
}

/// The raw (still JSON-escaped) string values of `"name": "value"` members anywhere in
/// `text` for which `wanted(name, value)` holds; `text` need not be valid JSON.
fn member_values(text: &str, wanted: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let bytes = text.as_bytes();
    // The index just past the closing quote of the string opening at `start`.
    let string_end = |start: usize| {
        let mut end = start + 1;
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        end.min(bytes.len())
    };
    let skip_space = |mut position: usize| {
        while matches!(bytes.get(position), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            position += 1;
        }
        position
    };
    let mut values = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'"' {
            index += 1;
            continue;
        }
        let name_end = string_end(index);
        let name = &text[index + 1..name_end];
        let colon = skip_space(name_end + 1);
        if bytes.get(colon) != Some(&b':') {
            index = name_end + 1;
            continue;
        }
        let value_start = skip_space(colon + 1);
        if bytes.get(value_start) != Some(&b'"') {
            index = value_start;
            continue;
        }
        let value_end = string_end(value_start);
        let value = &text[value_start + 1..value_end];
        if wanted(name, value) {
            values.push(value.to_string());
        }
        index = value_end + 1;
    }
    values
}

/// `"source": "<value>"` members (any spelling of the quotes' spacing) with the value
/// masked by [`mask_source`]; `None` when nothing changed.
fn mask_source_members(text: &str) -> Option<String> {
    const NAME: &str = "\"source\"";
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find(NAME) {
        let mut position = search + found + NAME.len();
        search = position;
        while matches!(bytes.get(position), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            position += 1;
        }
        if bytes.get(position) != Some(&b':') {
            continue;
        }
        position += 1;
        while matches!(bytes.get(position), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            position += 1;
        }
        if bytes.get(position) != Some(&b'"') {
            continue;
        }
        let start = position + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let end = end.min(bytes.len());
        let value = &text[start..end];
        let masked = mask_source(value);
        if masked != value {
            let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buffer.push_str(&text[copied..start]);
            buffer.push_str(&masked);
            copied = end;
        }
        search = end;
    }
    out.map(|mut buffer| {
        buffer.push_str(&text[copied..]);
        buffer
    })
}

/// Redacts credentials and e-mail local parts from free text.
///
/// - values of credential-like keys (`Authorization`, `api_key`, `x-api-key`,
///   `access_token`, `refresh_token`, `id_token`, `token`, `cookie`,
///   `Set-Cookie`, `password`, `*secret*`, `key=` query parameters, account
///   ids) written as `key: value`, `key=value` or `"key":"value"`;
/// - `Bearer <token>` with a token of at least 8 characters;
/// - well-known key shapes: `sk-…` (also `sk-ant-`, `sk-proj-`, `sk-or-`),
///   `sess-…`, `ghp_…` and the other GitHub token prefixes, `github_pat_…`,
///   `AIza…`, `hf_…`, `pk_…`, `rk_…`, `xai-…` and JWTs (`eyJ…`);
/// - e-mail addresses become `a***@domain`.
pub(crate) fn redact_secrets(text: &str) -> Cow<'_, str> {
    // Every pattern needs at least five bytes (`a@b.c`, `key=x`).
    if text.len() < 5 {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut current = Cow::Borrowed(text);
    if bytes.iter().any(|byte| matches!(byte, b':' | b'=')) {
        if let Some(changed) = redact_key_values(&current) {
            current = Cow::Owned(changed);
        }
        if let Some(changed) = redact_bearer(&current) {
            current = Cow::Owned(changed);
        }
    } else if bytes.iter().any(|byte| matches!(byte, b'b' | b'B'))
        && let Some(changed) = redact_bearer(&current)
    {
        current = Cow::Owned(changed);
    }
    if let Some(changed) = redact_key_shapes(&current) {
        current = Cow::Owned(changed);
    }
    if current.as_bytes().contains(&b'@')
        && let Some(changed) = mask_emails(&current)
    {
        current = Cow::Owned(changed);
    }
    current
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// Classifies an identifier found in text (lower-cased).
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// The value is one token (or a quoted string).
    Plain,
    /// `Authorization`-style: the value may be `<scheme> <token>`.
    Credentials,
    /// Cookie headers: an unquoted value runs to the end of the line.
    Cookie,
}

fn classify_key(lower: &[u8]) -> Option<KeyKind> {
    if lower.ends_with(b"authorization") {
        return Some(KeyKind::Credentials);
    }
    if matches!(lower, b"cookie" | b"set-cookie" | b"set_cookie") {
        return Some(KeyKind::Cookie);
    }
    let plain = matches!(
        lower,
        b"token"
            | b"key"
            | b"apikey"
            | b"api_key"
            | b"api-key"
            | b"password"
            | b"passwd"
            | b"account_id"
            | b"account-id"
    ) || [
        &b"api-key"[..],
        b"api_key",
        b"access_token",
        b"refresh_token",
        b"id_token",
        b"auth_token",
        b"auth-token",
        b"session_token",
        b"account-id",
    ]
    .iter()
    .any(|suffix| lower.ends_with(suffix))
        || contains_bytes(lower, b"secret")
        || contains_bytes(lower, b"password");
    plain.then_some(KeyKind::Plain)
}

fn redact_key_values(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut index = 0;
    while index < bytes.len() {
        if !is_ident_byte(bytes[index]) || (index > 0 && is_ident_byte(bytes[index - 1])) {
            index += 1;
            continue;
        }
        let start = index;
        let mut end = index;
        while end < bytes.len() && is_ident_byte(bytes[end]) {
            end += 1;
        }
        // Identifiers shorter than any key name, or too long to hold one
        // sensibly, are skipped without allocating.
        let mut buffer = [0_u8; 64];
        let Some(mut lower) = (end - start >= 3)
            .then(|| lower_into(&text[start..end], &mut buffer, false))
            .flatten()
        else {
            index = end;
            continue;
        };
        // "API key: …" is written with a space in some error messages.
        if lower == b"api"
            && bytes.get(end) == Some(&b' ')
            && text[end + 1..]
                .get(..3)
                .is_some_and(|w| w.eq_ignore_ascii_case("key"))
            && !bytes.get(end + 4).is_some_and(|b| is_ident_byte(*b))
        {
            end += 4;
            lower = b"api_key";
        }
        let Some(kind) = classify_key(lower) else {
            index = end;
            continue;
        };
        match value_span(bytes, end, kind) {
            Some((value_start, value_end)) => {
                let value = &text[value_start..value_end];
                // `key=[redacted]`: the `[` was skipped as a list opener.
                let already_redacted = text
                    .get(value_start.saturating_sub(1)..)
                    .is_some_and(|rest| rest.starts_with(REDACTED));
                let keep = value.is_empty()
                    || already_redacted
                    || value == REDACTED
                    || value == "null"
                    || value == "true"
                    || value == "false";
                if !keep {
                    let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
                    buffer.push_str(&text[copied..value_start]);
                    buffer.push_str(REDACTED);
                    copied = value_end;
                }
                index = value_end.max(end);
            }
            None => index = end,
        }
    }
    out.map(|mut buffer| {
        buffer.push_str(&text[copied..]);
        buffer
    })
}

/// Finds the value after a key: `key: v`, `key=v`, `"key": "v"`, `"key":["v"]`.
fn value_span(bytes: &[u8], key_end: usize, kind: KeyKind) -> Option<(usize, usize)> {
    let mut position = key_end;
    if matches!(bytes.get(position), Some(b'"' | b'\'')) {
        position += 1;
    }
    while matches!(bytes.get(position), Some(b' ' | b'\t')) {
        position += 1;
    }
    if !matches!(bytes.get(position), Some(b':' | b'=')) {
        return None;
    }
    position += 1;
    while matches!(bytes.get(position), Some(b' ' | b'\t' | b'[')) {
        position += 1;
    }
    if let Some(quote @ (b'"' | b'\'')) = bytes.get(position).copied() {
        let start = position + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end] != quote && bytes[end] != b'\n' {
            end += 1;
        }
        return Some((start, end));
    }
    let start = position;
    let mut end = start;
    let stops: &[u8] = match kind {
        KeyKind::Cookie => b"\r\n\"",
        KeyKind::Plain | KeyKind::Credentials => b" \t\r\n,;&\"'}])<>",
    };
    while end < bytes.len() && !stops.contains(&bytes[end]) {
        end += 1;
    }
    if kind == KeyKind::Credentials && end < bytes.len() && bytes[end] == b' ' {
        // `Authorization: Bearer abc`: take the scheme and its token.
        let mut token_end = end + 1;
        while token_end < bytes.len() && !stops.contains(&bytes[token_end]) {
            token_end += 1;
        }
        if token_end > end + 1 {
            end = token_end;
        }
    }
    Some((start, end))
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
}

fn redact_bearer(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = find_ascii_case_insensitive(&bytes[search..], b"bearer") {
        let start = search + found;
        let mut position = start + 6;
        search = position;
        if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let spaces_start = position;
        while matches!(bytes.get(position), Some(b' ' | b'\t')) {
            position += 1;
        }
        if position == spaces_start {
            continue;
        }
        let token_start = position;
        while position < bytes.len() && is_token_byte(bytes[position]) {
            position += 1;
        }
        if position - token_start >= 8 {
            let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buffer.push_str(&text[copied..token_start]);
            buffer.push_str(REDACTED);
            copied = position;
        }
        search = position;
    }
    out.map(|mut buffer| {
        buffer.push_str(&text[copied..]);
        buffer
    })
}

fn find_ascii_case_insensitive(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

/// Key prefixes and the minimum number of characters that must follow them.
const KEY_SHAPES: &[(&str, usize)] = &[
    ("sk-", 8),
    ("sess-", 8),
    ("ghp_", 8),
    ("gho_", 8),
    ("ghu_", 8),
    ("ghs_", 8),
    ("ghr_", 8),
    ("github_pat_", 8),
    ("AIza", 8),
    ("hf_", 8),
    ("pk_", 8),
    ("rk_", 8),
    ("xai-", 8),
    ("eyJ", 16),
];

fn redact_key_shapes(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let at_boundary = index == 0 || !bytes[index - 1].is_ascii_alphanumeric();
        if !at_boundary || !matches!(byte, b's' | b'g' | b'A' | b'h' | b'p' | b'r' | b'x' | b'e') {
            index += 1;
            continue;
        }
        let rest = &text[index..];
        let mut matched_end = None;
        for (prefix, minimum) in KEY_SHAPES {
            if !rest.starts_with(prefix) {
                continue;
            }
            let jwt = *prefix == "eyJ";
            let mut end = index + prefix.len();
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric()
                    || bytes[end] == b'_'
                    || bytes[end] == b'-'
                    || (jwt && bytes[end] == b'.'))
            {
                end += 1;
            }
            if end - index - prefix.len() >= *minimum {
                matched_end = Some(end);
                break;
            }
        }
        match matched_end {
            Some(end) => {
                let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
                buffer.push_str(&text[copied..index]);
                buffer.push_str(REDACTED);
                copied = end;
                index = end;
            }
            None => index += 1,
        }
    }
    out.map(|mut buffer| {
        buffer.push_str(&text[copied..]);
        buffer
    })
}

fn is_local_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-')
}

/// `alice.dev@example.com` → `a***@example.com` wherever it appears.
pub(crate) fn mask_emails(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = bytes[search..].iter().position(|byte| *byte == b'@') {
        let at = search + found;
        search = at + 1;
        let mut local_start = at;
        while local_start > copied && is_local_byte(bytes[local_start - 1]) {
            local_start -= 1;
        }
        let mut domain_end = at + 1;
        while domain_end < bytes.len() && is_domain_byte(bytes[domain_end]) {
            domain_end += 1;
        }
        let domain = text[at + 1..domain_end].trim_end_matches('.');
        let valid_domain =
            domain.contains('.') && !domain.starts_with('.') && !domain.starts_with('-');
        if local_start == at || !valid_domain {
            continue;
        }
        let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
        buffer.push_str(&text[copied..local_start]);
        buffer.push_str(&text[local_start..local_start + 1]);
        buffer.push_str("***");
        copied = at;
    }
    out.map(|mut buffer| {
        buffer.push_str(&text[copied..]);
        buffer
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_masking() {
        assert_eq!(mask_source("bob.ops@example.net"), "bob***@example.net");
        assert_eq!(mask_source("al@example.com"), "al***@example.com");
        assert_eq!(mask_source("sk-ant-api03-FAKEabcdwxyz"), "m:sk-a...wxyz");
        assert_eq!(
            mask_source("AIzaSyFAKE-FAKE-FAKE-FAKE-FAKE000000"),
            "m:AIza...0000"
        );
        assert_eq!(
            mask_source("0123456789abcdef0123456789abcdef"),
            "m:0123...cdef"
        );
        assert_eq!(mask_source("sk-1234"), "m:****");
        assert_eq!(mask_source("my-gcp-project-123"), "my-gcp-project-123");
        assert_eq!(
            mask_source("path/with/slash/and/a/very/long/name.json"),
            "path/with/slash/and/a/very/long/name.json"
        );
        // Multi-byte characters are never split.
        assert_eq!(mask_source("éé@example.com"), "é***@example.com");
    }

    #[test]
    fn secret_keys() {
        for key in [
            "api_key",
            "API-Key",
            " apikey ",
            "Authorization",
            "Set-Cookie",
            "cookie",
            "access_token",
            "refresh-token",
            "ID Token",
            "token",
            "client_secret",
            "SecretValue",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "tokens",
            "access_token_sha256",
            "source",
            "key",
            "total_tokens",
            "auth_index",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn client_text_is_sanitised_and_capped() {
        assert_eq!(
            sanitize_client_text("  a\t\tb\u{0}c \u{200b} d ", 64).as_deref(),
            Some("a b c d")
        );
        assert_eq!(sanitize_client_text(" \t ", 64), None);
        let long = "x".repeat(100);
        let capped = sanitize_client_text(&long, 64).expect("text");
        assert_eq!(capped.len(), 64);
        assert!(capped.ends_with("..."));
        let wide = "é".repeat(40);
        let capped = sanitize_client_text(&wide, 64).expect("text");
        assert!(capped.len() <= 64 && capped.ends_with("..."), "{capped}");
    }

    #[test]
    fn redaction_of_key_values() {
        let cases = [
            (
                "Authorization: Bearer abcdefgh12345",
                "Authorization: [redacted]",
            ),
            (
                r#"{"Authorization":"Bearer eyJhbGciOi.x.y"}"#,
                r#"{"Authorization":"[redacted]"}"#,
            ),
            ("access_token=abc123&x=1", "access_token=[redacted]&x=1"),
            (
                r#""refresh_token": "r-123""#,
                r#""refresh_token": "[redacted]""#,
            ),
            ("id_token: zzz", "id_token: [redacted]"),
            ("x-api-key: 0123abcd", "x-api-key: [redacted]"),
            ("invalid API key: 0123abcd", "invalid API key: [redacted]"),
            (
                "?alt=sse&key=AIzaSyFAKE-0000&x=1",
                "?alt=sse&key=[redacted]&x=1",
            ),
            (
                r#"{"Set-Cookie":["__cf_bm=abc; path=/"]}"#,
                r#"{"Set-Cookie":["[redacted]"]}"#,
            ),
            ("Cookie: a=b; c=d\nnext", "Cookie: [redacted]\nnext"),
            (
                r#""ChatGPT-Account-Id":"acc-FAKE-7d2c""#,
                r#""ChatGPT-Account-Id":"[redacted]""#,
            ),
            (
                r#""client_secret":"shh""#,
                r#""client_secret":"[redacted]""#,
            ),
            (
                r#""type":null,"code":"token_expired""#,
                r#""type":null,"code":"token_expired""#,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_secrets(input), expected, "{input}");
        }
    }

    #[test]
    fn redaction_of_bearer_and_shapes() {
        let cases = [
            ("got Bearer abcdefgh1234 back", "got Bearer [redacted] back"),
            ("Bearer short", "Bearer short"),
            (
                "key sk-proj-FAKEc2VjcmV0LW5vdC1yZWFsLWtleQ-FAKEFAKE0000. You",
                "key [redacted]. You",
            ),
            ("sk-ant-api03-FAKE0123456789", "[redacted]"),
            ("sk-or-v1-FAKE000000000000fake", "[redacted]"),
            ("sess-abcdefgh12345678", "[redacted]"),
            (
                "ghp_abcdefgh12345678 github_pat_11ABCDEFG0123456789",
                "[redacted] [redacted]",
            ),
            ("AIzaSyFAKE-FAKE-FAKE-FAKE-FAKE000000", "[redacted]"),
            (
                "hf_abcdefghijkl pk_live_12345678 rk_test_12345678",
                "[redacted] [redacted] [redacted]",
            ),
            ("xai-FAKE00000000000000", "[redacted]"),
            (
                "jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
                "jwt [redacted]",
            ),
            (
                "asksk-notakeyatall disk-space sk-learn",
                "asksk-notakeyatall disk-space sk-learn",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_secrets(input), expected, "{input}");
        }
    }

    #[test]
    fn emails_keep_first_character_and_domain() {
        assert_eq!(
            redact_secrets("account=bob.ops@example.net done"),
            "account=b***@example.net done"
        );
        assert_eq!(
            redact_secrets("a@b and x.y@mail.example.cn."),
            "a@b and x***@mail.example.cn."
        );
        assert_eq!(
            redact_secrets("already b***@example.net"),
            "already b***@example.net"
        );
        assert!(matches!(redact_secrets("nothing to see"), Cow::Borrowed(_)));
    }

    #[test]
    fn summary_is_capped_and_scans_a_bounded_prefix() {
        let body = format!("{} sk-proj-SECRETSECRETSECRET", "x".repeat(5000));
        let summary = summarize(&body).expect("summary");
        assert_eq!(summary.len(), SUMMARY_LIMIT + 3);
        assert!(summary.ends_with("..."));
        assert_eq!(summarize("  \n "), None);
        // A key straddling the scan limit is dropped, not cut in half.
        let body = format!("{} sk-proj-{}", "y ".repeat(4090), "S".repeat(64));
        let summary = summarize(&body).expect("summary");
        assert!(!summary.contains("SSSS"), "{summary}");
    }

    #[test]
    fn dead_letter_payloads_keep_their_shape_without_credentials() {
        let item = r#"{"timestamp":"bad","api_key":"client-key-FAKE-123","apiKey":"other-FAKE-9","source":"0123456789abcdef0123456789abcdef","model":"gpt-x","headers":{"Authorization":"Bearer abcdefgh12345"},"fail_body":"upstream said sk-proj-FAKEFAKEFAKEFAKE for bob.ops@example.net, key client-key-FAKE-123 refused; source 0123456789abcdef0123456789abcdef","tokens":{"input_tokens":1e99}}"#;
        let stored = dead_letter_payload(item);
        for secret in [
            "client-key-FAKE-123",
            "other-FAKE-9",
            "0123456789abcdef0123456789abcdef",
            "abcdefgh12345",
            "sk-proj-FAKEFAKEFAKEFAKE",
            "bob.ops@",
        ] {
            assert!(!stored.contains(secret), "{secret} in {stored}");
        }
        // What is needed to see why it was refused stays.
        for kept in [
            r#""timestamp":"bad""#,
            r#""model":"gpt-x""#,
            r#""source":"m:0123...cdef""#,
            r#""input_tokens":1e99"#,
        ] {
            assert!(stored.contains(kept), "{kept} missing from {stored}");
        }
        assert_eq!(dead_letter_payload(&stored), stored);
        // Not JSON at all, and a short project id that is not a secret.
        assert_eq!(
            dead_letter_payload("api_key=abc123 not json"),
            "api_key=[redacted] not json"
        );
        assert_eq!(
            dead_letter_payload(r#"{"source" : "my-project"}"#),
            r#"{"source" : "my-project"}"#
        );
        // An escaped quote inside a key does not end it early.
        let escaped = dead_letter_payload(
            r#"{"api_key":"abc\"defghij-secret","echo":"abc\"defghij-secret"}"#,
        );
        assert!(!escaped.contains("defghij-secret"), "{escaped}");
    }

    #[test]
    fn dead_letter_payloads_are_capped_without_half_keys() {
        // A bearer token cut after four characters would be too short to be recognised.
        let long = format!(
            "{} Bearer {}",
            "x".repeat(DEAD_LETTER_LIMIT - 12),
            "K".repeat(200)
        );
        let stored = dead_letter_payload(&long);
        assert!(stored.len() <= DEAD_LETTER_LIMIT + 3);
        assert!(
            stored.ends_with(" Bearer ..."),
            "tail: {}",
            &stored[stored.len() - 20..]
        );
        assert!(!stored.contains('K'));
        let exact = "y".repeat(DEAD_LETTER_LIMIT);
        assert_eq!(dead_letter_payload(&exact), exact);
    }

    #[test]
    fn summaries_are_stable_when_summarised_again() {
        // An imported export carries summaries that are redacted once more.
        for body in [
            "GET /x?alt=sse&key=AIzaSyFAKE0000000000000000000 failed",
            "Authorization: Bearer abcdefghijklmnopqrstuvwxyz",
            r#"{"error":{"message":"bad api_key: sk-proj-abcdefghijklmnop","email":"bob.ops@example.net"}}"#,
            "cookie: session=abc; other=1\nnext line",
            &format!("{} tail", "z".repeat(5000)),
        ] {
            let once = summarize(body).expect("summary");
            assert_eq!(summarize(&once).as_deref(), Some(once.as_str()), "{body}");
        }
    }
}
