//! Compact forms of two per-event texts, both exactly reversible.
//!
//! **Response metadata.** `response_metadata_json` repeats the same shape from
//! event to event (the same keys, content types, plan names) with a few numbers
//! and ids that change. It is stored as a *template*, the text with every
//! number and every string value that looks like an id or a count (two digits
//! or more, or long) cut out, kept once in the dictionary (`dims`, kind `ResponseMetadata`), and the cut-out
//! literals in a small blob (`metadata_values`). A literal is written as the
//! shortest of: a varint (integers, and decimals as digits plus the dot's
//! place), a varint relative to the event's `timestamp_ms` (reset instants),
//! a reference to an earlier literal of the same event, a reference to the
//! event's `header_trace_id`, the event's `timestamp_ms` plus the previous
//! literal in seconds (a reset instant after its delay), the bytes of leading
//! lowercase hex digits followed by the rest of the text, or its raw bytes. A text the encoder cannot
//! rebuild byte for byte stays in `response_metadata_json` as it was.
//!
//! **Timestamp text.** CPA sends RFC 3339 instants with up to nanoseconds. When
//! the text is the canonical millisecond form of `timestamp_ms` with more
//! fraction digits, only the digits beyond the millisecond are kept
//! (`timestamp_sub_ms`: `10^n` plus those `n` digits, so leading and trailing
//! zeros survive); any other text stays in `timestamp_text`.

use std::borrow::Cow;

/// Marks a cut-out literal in a template. Templates are only made from texts
/// that do not contain it.
const HOLE: char = '\u{1}';

/// A string value with at most this many bytes and fewer than [`ID_DIGITS`]
/// digits stays in the template (content types, plan names, statuses); others
/// (request ids, rays, durations such as `6m0s`) are literals, so the number of
/// templates stays small.
const KEPT_STRING_BYTES: usize = 48;
const ID_DIGITS: usize = 2;

/// Longest template kept in the dictionary; a longer text is stored as it is.
const TEMPLATE_LIMIT: usize = 2_048;

const TAG_INTEGER: u8 = 0;
const TAG_RELATIVE: u8 = 1;
const TAG_REPEAT: u8 = 2;
const TAG_TRACE: u8 = 3;
const TAG_RAW: u8 = 4;
/// A string opening with lowercase hex digits: their bytes, then the rest raw.
const TAG_HEX: u8 = 5;
/// An integer near the event's `timestamp_ms` plus the previous literal (an
/// integer) times 1000, a reset instant after its reset delay in seconds: the
/// difference follows (the moment the headers arrived, after the event).
const TAG_SECONDS_AFTER: u8 = 6;
/// Fewest hex digits [`TAG_HEX`] is used for.
const HEX_DIGITS: usize = 8;
/// `TAG_DECIMAL + k`: a decimal with `k` fraction digits (1 ≤ k ≤ 18).
const TAG_DECIMAL: u8 = 16;

/// A response-metadata text split into its template and its literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetadataParts {
    pub template: String,
    pub values: Vec<u8>,
}

/// Splits `text` into a template and literals, or `None` when it is to be
/// stored as it is. `decode_metadata` of the result gives `text` back exactly.
pub(crate) fn encode_metadata(
    text: &str,
    timestamp_ms: i64,
    trace_id: Option<&str>,
) -> Option<MetadataParts> {
    if text.contains(HOLE) || !text.starts_with('{') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut template = String::with_capacity(text.len().min(TEMPLATE_LIMIT));
    let mut values = Vec::with_capacity(64);
    let mut literals: Vec<&str> = Vec::new();
    let mut at = 0;
    let mut copied = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                let end = string_end(bytes, at)?;
                let inner = &text[at + 1..end];
                let is_key = bytes[end + 1..]
                    .iter()
                    .find(|byte| !byte.is_ascii_whitespace())
                    == Some(&b':');
                if !is_key
                    && (inner.len() > KEPT_STRING_BYTES
                        || inner.bytes().filter(u8::is_ascii_digit).count() >= ID_DIGITS)
                {
                    template.push_str(&text[copied..=at]);
                    template.push(HOLE);
                    put_literal(
                        &mut values,
                        &mut literals,
                        inner,
                        false,
                        timestamp_ms,
                        trace_id,
                    );
                    copied = end;
                }
                at = end + 1;
            }
            b'-' | b'0'..=b'9' => {
                let end = at
                    + bytes[at..]
                        .iter()
                        .take_while(|byte| {
                            matches!(byte, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                        })
                        .count();
                template.push_str(&text[copied..at]);
                template.push(HOLE);
                put_literal(
                    &mut values,
                    &mut literals,
                    &text[at..end],
                    true,
                    timestamp_ms,
                    trace_id,
                );
                copied = end;
                at = end;
            }
            _ => at += 1,
        }
    }
    template.push_str(&text[copied..]);
    if template.len() > TEMPLATE_LIMIT {
        return None;
    }
    let parts = MetadataParts { template, values };
    (decode_metadata(&parts.template, &parts.values, timestamp_ms, trace_id).as_deref()
        == Some(text))
    .then_some(parts)
}

/// The index just past the closing quote's position: the closing quote of the
/// string opening at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return Some(at),
            _ => at += 1,
        }
    }
    None
}

fn put_literal<'t>(
    values: &mut Vec<u8>,
    literals: &mut Vec<&'t str>,
    literal: &'t str,
    number: bool,
    timestamp_ms: i64,
    trace_id: Option<&str>,
) {
    let earlier = literals.iter().position(|seen| *seen == literal);
    literals.push(literal);
    if let Some(index) = earlier {
        values.push(TAG_REPEAT);
        put_varint(values, index as u64);
        return;
    }
    if !number && trace_id == Some(literal) {
        values.push(TAG_TRACE);
        return;
    }
    if number {
        if let Ok(value) = literal.parse::<i64>()
            && value.to_string() == literal
        {
            let relative = value.wrapping_sub(timestamp_ms);
            let relative_ok = relative.wrapping_add(timestamp_ms) == value;
            let after = (literals.len() >= 2)
                .then(|| seconds_after(literals[literals.len() - 2], timestamp_ms))
                .flatten()
                .and_then(|base| value.checked_sub(base));
            if let Some(after) = after
                && zigzag(after) < zigzag(value)
                && (!relative_ok || zigzag(after) < zigzag(relative))
            {
                values.push(TAG_SECONDS_AFTER);
                put_varint(values, zigzag(after));
                return;
            }
            if zigzag(relative) < zigzag(value) && relative_ok {
                values.push(TAG_RELATIVE);
                put_varint(values, zigzag(relative));
            } else {
                values.push(TAG_INTEGER);
                put_varint(values, zigzag(value));
            }
            return;
        }
        if let Some((digits, fraction)) = decimal(literal) {
            values.push(TAG_DECIMAL + fraction);
            put_varint(values, zigzag(digits));
            return;
        }
    }
    let digits = literal
        .bytes()
        .take_while(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        .count()
        & !1;
    if !number && digits >= HEX_DIGITS {
        let mut bytes = vec![0_u8; digits / 2];
        if hex_into(&literal.as_bytes()[..digits], &mut bytes).is_some() {
            let rest = &literal[digits..];
            values.push(TAG_HEX);
            put_varint(values, bytes.len() as u64);
            values.extend_from_slice(&bytes);
            put_varint(values, rest.len() as u64);
            values.extend_from_slice(rest.as_bytes());
            return;
        }
    }
    values.push(TAG_RAW);
    put_varint(values, literal.len() as u64);
    values.extend_from_slice(literal.as_bytes());
}

/// `timestamp_ms` plus `previous` (an integer literal) seconds, when that
/// arithmetic stays exact.
fn seconds_after(previous: &str, timestamp_ms: i64) -> Option<i64> {
    let seconds: i64 = previous.parse().ok()?;
    if seconds.to_string() != previous {
        return None;
    }
    seconds.checked_mul(1000)?.checked_add(timestamp_ms)
}

/// `-?I.F` as (the digits of I and F as one integer, the count of F's digits),
/// when writing that pair back gives the same text.
fn decimal(literal: &str) -> Option<(i64, u8)> {
    let (whole, fraction) = literal.split_once('.')?;
    if fraction.is_empty() || fraction.len() > 18 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let joined: i64 = format!("{whole}{fraction}").parse().ok()?;
    let places = fraction.len() as u8;
    let mut check = String::new();
    write_decimal(&mut check, joined, places);
    (check == literal && !whole.is_empty()).then_some((joined, places))
}

fn write_decimal(out: &mut String, joined: i64, places: u8) {
    let digits = joined.unsigned_abs().to_string();
    let places = usize::from(places);
    let padded = if digits.len() <= places {
        format!("{}{digits}", "0".repeat(places + 1 - digits.len()))
    } else {
        digits
    };
    if joined < 0 {
        out.push('-');
    }
    let split = padded.len() - places;
    out.push_str(&padded[..split]);
    out.push('.');
    out.push_str(&padded[split..]);
}

/// Rebuilds the text [`encode_metadata`] split; `None` when the parts are damaged.
pub(crate) fn decode_metadata(
    template: &str,
    values: &[u8],
    timestamp_ms: i64,
    trace_id: Option<&str>,
) -> Option<String> {
    let mut out = String::with_capacity(template.len() + values.len() * 2);
    let mut literals: Vec<(usize, usize)> = Vec::new();
    let mut cursor = values;
    let mut pieces = template.split(HOLE);
    out.push_str(pieces.next()?);
    for piece in pieces {
        let start = out.len();
        let (&tag, rest) = cursor.split_first()?;
        cursor = rest;
        match tag {
            TAG_INTEGER => out.push_str(&unzigzag(take_varint(&mut cursor)?).to_string()),
            TAG_RELATIVE => {
                let value = unzigzag(take_varint(&mut cursor)?).wrapping_add(timestamp_ms);
                out.push_str(&value.to_string());
            }
            TAG_REPEAT => {
                let index = usize::try_from(take_varint(&mut cursor)?).ok()?;
                let (from, to) = *literals.get(index)?;
                let earlier = out.get(from..to)?.to_string();
                out.push_str(&earlier);
            }
            TAG_TRACE => out.push_str(trace_id?),
            TAG_SECONDS_AFTER => {
                let &(from, to) = literals.last()?;
                let base = seconds_after(out.get(from..to)?, timestamp_ms)?;
                let value = base.checked_add(unzigzag(take_varint(&mut cursor)?))?;
                out.push_str(&value.to_string());
            }
            TAG_HEX => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                let length = usize::try_from(take_varint(&mut cursor)?).ok()?;
                if cursor.len() < length {
                    return None;
                }
                let (bytes, rest) = cursor.split_at(length);
                for byte in bytes {
                    out.push(char::from(DIGITS[usize::from(byte >> 4)]));
                    out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
                }
                cursor = rest;
                let length = usize::try_from(take_varint(&mut cursor)?).ok()?;
                if cursor.len() < length {
                    return None;
                }
                let (raw, rest) = cursor.split_at(length);
                out.push_str(std::str::from_utf8(raw).ok()?);
                cursor = rest;
            }
            TAG_RAW => {
                let length = usize::try_from(take_varint(&mut cursor)?).ok()?;
                if cursor.len() < length {
                    return None;
                }
                let (raw, rest) = cursor.split_at(length);
                out.push_str(std::str::from_utf8(raw).ok()?);
                cursor = rest;
            }
            tag if tag > TAG_DECIMAL && tag <= TAG_DECIMAL + 18 => {
                write_decimal(
                    &mut out,
                    unzigzag(take_varint(&mut cursor)?),
                    tag - TAG_DECIMAL,
                );
            }
            _ => return None,
        }
        literals.push((start, out.len()));
        out.push_str(piece);
    }
    cursor.is_empty().then_some(out)
}

/// The stored response metadata of an event, from its three columns.
pub(crate) fn stored_metadata<'a>(
    raw: Option<&'a str>,
    template: Option<&str>,
    values: Option<&[u8]>,
    timestamp_ms: i64,
    trace_id: Option<&str>,
) -> Option<Cow<'a, str>> {
    if let Some(raw) = raw {
        return Some(Cow::Borrowed(raw));
    }
    let template = template.filter(|template| !template.is_empty())?;
    decode_metadata(template, values.unwrap_or(&[]), timestamp_ms, trace_id).map(Cow::Owned)
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(cursor: &mut &[u8]) -> Option<u64> {
    let mut value = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = cursor.split_first()?;
        *cursor = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fraction digits beyond the milliseconds of `text`, as `10^n` plus those
/// `n` digits (`0126_timestamp_sub_digits`; before it, `10^n` plus every
/// fraction digit), when `text` is `timestamp_ms`'s canonical text with those
/// digits added. `canonical` is a scratch buffer.
pub(crate) fn timestamp_sub_ms(
    text: &str,
    timestamp_ms: i64,
    canonical: &mut String,
) -> Option<i64> {
    canonical.clear();
    cpamp_domain::event::write_timestamp_ms(canonical, timestamp_ms);
    let seconds = canonical.get(..19)?;
    let fraction = text
        .strip_prefix(seconds)?
        .strip_prefix('.')?
        .strip_suffix('Z')?;
    if fraction.len() <= 3 || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = fraction[..3].parse().ok()?;
    if millis != timestamp_ms.rem_euclid(1_000) {
        return None;
    }
    let beyond = &fraction[3..];
    let sub = 10_i64.pow(beyond.len() as u32) + beyond.parse::<i64>().ok()?;
    (timestamp_text(timestamp_ms, sub).as_deref() == Some(text)).then_some(sub)
}

/// The timestamp text [`timestamp_sub_ms`] encoded.
pub(crate) fn timestamp_text(timestamp_ms: i64, sub_ms: i64) -> Option<String> {
    let digits = sub_ms.checked_ilog10()? as usize;
    if !(1..=6).contains(&digits) {
        return None;
    }
    let beyond = sub_ms - 10_i64.pow(digits as u32);
    let mut text = String::with_capacity(32);
    cpamp_domain::event::write_timestamp_ms(&mut text, timestamp_ms);
    text.truncate(19);
    text.push('.');
    text.push_str(&format!(
        "{:03}{beyond:0digits$}",
        timestamp_ms.rem_euclid(1_000)
    ));
    text.push('Z');
    Some(text)
}

/// The `usage_rollup_backfill` step that gives events stored before
/// `0030_compact_events` their compact columns.
pub(crate) const COMPACT_EVENTS: &str = "compact_events";

/// Moves stored timestamp texts and response metadata into their compact
/// columns, leaving whatever that form cannot rebuild byte for byte, in one
/// transaction with the removal of the step's mark. Runs at open, before
/// anything is ingested; does nothing without the mark.
pub(crate) fn convert_stored(connection: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !crate::rollup::step_pending(&transaction, COMPACT_EVENTS)? {
        return Ok(());
    }
    {
        let mut select = transaction.prepare(
            "SELECT id, timestamp_ms, timestamp_text, response_metadata_json, header_trace_id \
             FROM usage_events WHERE id > ?1 \
             AND (timestamp_text IS NOT NULL OR response_metadata_json IS NOT NULL) \
             ORDER BY id LIMIT 2000",
        )?;
        let mut update = transaction.prepare(
            "UPDATE usage_events SET \
             timestamp_text = CASE WHEN ?1 IS NULL THEN timestamp_text END, \
             timestamp_sub_ms = ?1, \
             response_metadata_json = CASE WHEN ?2 IS NULL THEN response_metadata_json END, \
             metadata_template_id = ?2, metadata_values = ?3 WHERE id = ?4",
        )?;
        let mut template = transaction.prepare(
            "INSERT INTO dims (kind, value) VALUES (?1, ?2) \
             ON CONFLICT (kind, value) DO UPDATE SET value = excluded.value RETURNING id",
        )?;
        let mut templates: std::collections::HashMap<String, i64> = Default::default();
        let mut scratch = String::new();
        let mut after = 0_i64;
        loop {
            // A chunk is read whole before its rows change.
            type Row = (i64, i64, Option<String>, Option<String>, Option<String>);
            let rows: Vec<Row> = select
                .query_map([after], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.0;
            for (id, timestamp_ms, text, metadata, trace) in rows {
                let sub_ms = text
                    .as_deref()
                    .and_then(|text| timestamp_sub_ms(text, timestamp_ms, &mut scratch));
                let parts = metadata.as_deref().and_then(|metadata| {
                    encode_metadata(
                        metadata,
                        timestamp_ms,
                        trace.as_deref().filter(|trace| !trace.is_empty()),
                    )
                });
                if sub_ms.is_none() && parts.is_none() {
                    continue;
                }
                let (template_id, values) = match parts {
                    None => (None, None),
                    Some(parts) => {
                        let id = match templates.get(&parts.template) {
                            Some(id) => *id,
                            None => {
                                let id: i64 = template.query_row(
                                    (
                                        crate::dims::DimKind::ResponseMetadata as u8,
                                        &parts.template,
                                    ),
                                    |row| row.get(0),
                                )?;
                                templates.insert(parts.template, id);
                                id
                            }
                        };
                        (Some(id), Some(parts.values))
                    }
                };
                update.execute((sub_ms, template_id, values, id))?;
            }
        }
    }
    crate::rollup::step_done(&transaction, COMPACT_EVENTS)?;
    transaction.commit()
}

/// The stored timestamp text of an event, from its columns.
pub(crate) fn stored_timestamp<'a>(
    text: Option<&'a str>,
    sub_ms: Option<i64>,
    timestamp_ms: i64,
) -> Cow<'a, str> {
    if let Some(text) = text {
        return Cow::Borrowed(text);
    }
    if let Some(text) = sub_ms.and_then(|sub| timestamp_text(timestamp_ms, sub)) {
        return Cow::Owned(text);
    }
    Cow::Owned(cpamp_domain::event::format_timestamp_ms(timestamp_ms))
}

/// A request id of eight lowercase hex digits as its four bytes
/// (`usage_events.request_key`, `0121_event_ids_binary`); `None` for any other
/// text, which is stored as it is.
pub(crate) fn request_bytes(text: &str) -> Option<[u8; 4]> {
    let mut bytes = [0_u8; 4];
    hex_into(text.as_bytes(), &mut bytes)?;
    Some(bytes)
}

/// A trace id in the lowercase 8-4-4-4-12 form of a UUID as its sixteen bytes
/// (`usage_events.header_trace`, `0121_event_ids_binary`); `None` for any other
/// text, which is stored as it is.
pub(crate) fn trace_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 36 || [8, 13, 18, 23].iter().any(|&at| text[at] != b'-') {
        return None;
    }
    let mut bytes = [0_u8; 16];
    for (from, to, out) in [
        (0, 8, 0),
        (9, 13, 4),
        (14, 18, 6),
        (19, 23, 8),
        (24, 36, 10),
    ] {
        hex_into(&text[from..to], &mut bytes[out..out + (to - from) / 2])?;
    }
    Some(bytes)
}

/// Lowercase hex digits into `out` (exactly twice as many digits as bytes).
fn hex_into(digits: &[u8], out: &mut [u8]) -> Option<()> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

/// The text a stored request id or trace id stands for: a stored text as it
/// is, the bytes of [`request_bytes`] or [`trace_bytes`] written back (into
/// `out`, cleared first). `None` for NULL or any other value.
pub(crate) fn stored_key<'a>(
    value: rusqlite::types::ValueRef<'a>,
    out: &'a mut String,
) -> Option<&'a str> {
    use rusqlite::types::ValueRef;
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    match value {
        ValueRef::Text(text) => std::str::from_utf8(text).ok(),
        ValueRef::Blob(bytes) if bytes.len() == 4 || bytes.len() == 16 => {
            out.clear();
            for (index, byte) in bytes.iter().enumerate() {
                if bytes.len() == 16 && matches!(index, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                out.push(char::from(DIGITS[usize::from(byte >> 4)]));
                out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
            }
            Some(out.as_str())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODEX: &str = r#"{"quota":{"plan_type":"team","primary":{"reset_after_seconds":12251,"reset_at_ms":1772421856386,"used_percent":99.0,"window_minutes":300},"recover_at_ms":1772421856386,"secondary":{"reset_after_seconds":462101,"reset_at_ms":1772871706386,"used_percent":74.0,"window_minutes":10080},"used_percent":99.0},"response":{"content_type":"text/event-stream; charset=utf-8"},"trace":{"cf_ray":"39712cd0467b902d-SJC","request_id":"26d3e413-9ed0-4903-a9ca-aafadb92d339"}}"#;

    #[test]
    fn codex_metadata_round_trips_in_a_fraction_of_its_size() {
        let trace = Some("26d3e413-9ed0-4903-a9ca-aafadb92d339");
        let parts = encode_metadata(CODEX, 1_772_409_605_386, trace).expect("encodes");
        // The reset instants are the event's instant plus their delays, the ray
        // is hex digits and a suffix.
        assert!(
            parts.values.len() < 48,
            "{} value bytes",
            parts.values.len()
        );
        // Headers that arrived 1.234 s after the event: the instants stay short.
        let later = encode_metadata(CODEX, 1_772_409_605_386 - 1_234, trace).expect("encodes");
        assert!(
            later.values.len() < parts.values.len() + 6,
            "{} value bytes",
            later.values.len()
        );
        assert_eq!(
            decode_metadata(
                &later.template,
                &later.values,
                1_772_409_605_386 - 1_234,
                trace
            )
            .as_deref(),
            Some(CODEX)
        );
        assert!(parts.template.contains("text/event-stream; charset=utf-8"));
        assert!(!parts.template.contains("1772421856386"));
        assert_eq!(
            decode_metadata(&parts.template, &parts.values, 1_772_409_605_386, trace).as_deref(),
            Some(CODEX)
        );
        // The same shape with other numbers shares the template.
        let other = CODEX.replace("12251", "7").replace("74.0", "3.5");
        let again = encode_metadata(&other, 1_772_409_605_386, None).expect("encodes");
        assert_eq!(again.template, parts.template);
        assert_eq!(
            decode_metadata(&again.template, &again.values, 1_772_409_605_386, None).as_deref(),
            Some(other.as_str())
        );
    }

    #[test]
    fn changing_counts_and_durations_share_one_template() {
        let template = |text: &str| encode_metadata(text, 0, None).expect("encodes").template;
        let first = template(
            r#"{"rate_limit":{"reset_requests":"6m0s","reset_tokens":"1s"},"response":{"content_type":"text/plain; charset=utf-8"}}"#,
        );
        let second = template(
            r#"{"rate_limit":{"reset_requests":"59m12s","reset_tokens":"1s"},"response":{"content_type":"text/plain; charset=utf-8"}}"#,
        );
        assert_eq!(first, second);
        assert!(
            first.contains("charset=utf-8") && first.contains("\"1s\""),
            "{first}"
        );
    }

    #[test]
    fn every_literal_form_round_trips() {
        for text in [
            r#"{"a":0.68,"b":-0.05,"c":1e-7,"d":-12,"e":00.10,"f":1.50,"g":"x\"1","h":[1,2,1],"i":"plain"}"#,
            r#"{"quota":{"used":1e-7}}"#,
            r#" {"quota":{"used":1e-7}} "#,
            r#"{"n":-9223372036854775808,"m":9223372036854775807,"big":123456789012345678901234567890}"#,
            r#"{"s":"ünïcödé 42","k":"a\\"}"#,
            r#"{"deep":{"x":[{"y":"z9"},{"y":"z9"}]},"t":true,"u":null}"#,
            r#"{"ray":"39712cd0467b902d-SJC","odd":"39712cd0467b902","up":"39712CD0467B902D","all":"0123456789abcdef","short":"0123456"}"#,
            r#"{"after":12,"at":1700000012000,"not":1700000012001,"s":"12","at2":1700000012000,"neg":-3,"at3":1699999997000}"#,
            r#"{"after":18000,"at":1700018000731,"late":9,"at2":1699999999999,"big":9223372036854775807,"at3":-9223372036854775808}"#,
            r#"{"big":9223372036854775,"at":-1}"#,
        ] {
            match encode_metadata(text, 1_700_000_000_000, Some("z9")) {
                Some(parts) => assert_eq!(
                    decode_metadata(
                        &parts.template,
                        &parts.values,
                        1_700_000_000_000,
                        Some("z9")
                    )
                    .as_deref(),
                    Some(text),
                    "{text}"
                ),
                None => assert!(!text.starts_with('{'), "{text} was not encoded"),
            }
        }
    }

    #[test]
    fn texts_it_cannot_rebuild_stay_as_they_are() {
        for text in ["[1,2]", "{\"a\":\"\u{1}\"}", "{\"a\":\"unterminated123}"] {
            assert_eq!(encode_metadata(text, 0, None), None, "{text}");
        }
        // A text that is not JSON but holds no literal is its own template.
        let parts = encode_metadata("{not json", 0, None).expect("a template");
        assert_eq!(parts.template, "{not json");
        assert_eq!(
            stored_metadata(Some("{raw}"), Some("ignored"), None, 0, None).as_deref(),
            Some("{raw}")
        );
        assert_eq!(stored_metadata(None, None, None, 0, None), None);
        // Damaged parts decode to nothing rather than to a wrong text.
        assert_eq!(
            decode_metadata("{\"a\":\u{1}}", &[TAG_RAW, 9], 0, None),
            None
        );
        assert_eq!(decode_metadata("{\"a\":\u{1}}", &[], 0, None), None);
        assert_eq!(decode_metadata("{}", &[TAG_INTEGER, 2], 0, None), None);
    }

    #[test]
    fn hex_request_and_trace_ids_round_trip_through_their_bytes() {
        use rusqlite::types::ValueRef;
        let mut out = String::new();
        for request in ["0000abcd", "ffffffff", "12345678", "00000000"] {
            let bytes = request_bytes(request).expect(request);
            assert_eq!(stored_key(ValueRef::Blob(&bytes), &mut out), Some(request));
        }
        for other in [
            "0000ABCD",
            "0000abc",
            "0000abcde",
            "req-1",
            "",
            "0000abcg",
            "é000abc",
        ] {
            assert_eq!(request_bytes(other), None, "{other}");
        }
        for trace in [
            "26d3e413-9ed0-4903-a9ca-aafadb92d339",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ] {
            let bytes = trace_bytes(trace).expect(trace);
            assert_eq!(stored_key(ValueRef::Blob(&bytes), &mut out), Some(trace));
        }
        for other in [
            "26D3E413-9ED0-4903-A9CA-AAFADB92D339",
            "26d3e4139ed04903a9caaafadb92d339",
            "26d3e413-9ed0-4903-a9ca-aafadb92d33",
            "26d3e413-9ed0-4903-a9ca-aafadb92d3390",
            "26d3e413-9ed04-903-a9ca-aafadb92d339",
            "26d3e413-9ed0-4903-a9ca-aafadb92d33g",
            "req_011C26d3e413-9ed0",
            "39712cd0467b902d-SJC",
        ] {
            assert_eq!(trace_bytes(other), None, "{other}");
        }
        assert_eq!(stored_key(ValueRef::Text(b"kept"), &mut out), Some("kept"));
        assert_eq!(stored_key(ValueRef::Null, &mut out), None);
    }

    #[test]
    fn timestamp_digits_beyond_the_millisecond_round_trip() {
        let mut scratch = String::new();
        let ms = 1_772_409_600_429;
        for text in [
            "2026-03-02T00:00:00.429123457Z",
            "2026-03-02T00:00:00.4290Z",
            "2026-03-02T00:00:00.429000000Z",
            "2026-03-02T00:00:00.42900100Z",
        ] {
            let sub = timestamp_sub_ms(text, ms, &mut scratch).expect(text);
            assert_eq!(stored_timestamp(None, Some(sub), ms), text);
        }
        let whole = 1_772_409_600_000;
        let sub = timestamp_sub_ms("2026-03-02T00:00:00.000123457Z", whole, &mut scratch)
            .expect("zero milliseconds");
        assert_eq!(
            stored_timestamp(None, Some(sub), whole),
            "2026-03-02T00:00:00.000123457Z"
        );
        for text in [
            "2026-03-02T00:00:00.429Z",
            "2026-03-02T00:00:00.43Z",
            "2026-03-02T00:00:00.428123457Z",
            "2026-03-02T08:00:00.429123457+08:00",
            "2026-03-02T00:00:00.4291234567Z",
            "2026-03-02 00:00:00.429123Z",
        ] {
            assert_eq!(timestamp_sub_ms(text, ms, &mut scratch), None, "{text}");
        }
        assert_eq!(stored_timestamp(None, None, ms), "2026-03-02T00:00:00.429Z");
        assert_eq!(stored_timestamp(Some("kept"), Some(1), ms), "kept");
    }
}
