//! A small borrowed JSON tree for queue payloads, plus its compact writer.
//!
//! `serde_json::Value` would copy every string and sort every object into a
//! map. Payloads are decoded once per event and read through a fixed set of
//! key lookups, so a tree that borrows unescaped strings from the input and
//! keeps objects as ordered pairs is cheaper. It also lets the parser report
//! *which* field held a number too large for a double (`1e400`), which
//! `serde_json` alone only reports as a column.
//!
//! Duplicate object keys are kept in the tree; lookups take the **last**
//! occurrence, which is what Go's `encoding/json` does when it fills a map.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::fmt::Write as _;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// A JSON number as the parser produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// Non-negative integer literal that fits `u64`.
    Unsigned(u64),
    /// Negative integer literal that fits `i64`.
    Signed(i64),
    /// Any literal with a fraction or exponent, or an integer beyond `u64`.
    Float(f64),
}

/// One JSON value; strings borrow from the input when they hold no escapes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// The members of an object, or `None` for any other type.
    pub(crate) fn as_object(&self) -> Option<&[(Cow<'a, str>, Json<'a>)]> {
        match self {
            Json::Object(members) => Some(members),
            _ => None,
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

/// Looks a key up in an object; the last duplicate wins, as in Go.
pub(crate) fn member<'o, 'a>(
    object: &'o [(Cow<'a, str>, Json<'a>)],
    key: &str,
) -> Option<&'o Json<'a>> {
    object
        .iter()
        .rev()
        .find(|(name, _)| name.as_ref() == key)
        .map(|(_, value)| value)
}

/// Why a payload is not JSON we can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Syntax error (or a limit of the parser), with its position.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A number literal too large for a double, inside the named field.
    NumberOutOfRange { path: String },
}

impl fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Syntax {
                line,
                column,
                message,
            } => {
                write!(
                    formatter,
                    "invalid JSON at line {line} column {column}: {message}"
                )
            }
            ParseError::NumberOutOfRange { path } => {
                write!(formatter, "{path} is out of the 64-bit integer range")
            }
        }
    }
}

/// Parses exactly one JSON value (surrounding whitespace allowed).
///
/// Nesting is bounded by `serde_json`'s recursion limit (128), so deep input
/// fails cleanly instead of exhausting the stack.
pub(crate) fn parse(text: &str) -> Result<Json<'_>, ParseError> {
    let failure = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = ValueSeed {
        failure: &failure,
        at: None,
    };
    let parsed = seed.deserialize(&mut deserializer).and_then(|value| {
        deserializer.end()?;
        Ok(value)
    });
    parsed.map_err(|error| {
        let message = error.to_string();
        // serde_json appends " at line L column C"; keep only the cause.
        let cause = match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_string(),
            None => message,
        };
        if cause == "number out of range"
            && let Some(path) = failure.borrow_mut().take()
        {
            return ParseError::NumberOutOfRange { path };
        }
        let message = if cause.contains("hex escape") {
            // serde_json rejects lone UTF-16 surrogates (`\ud800`), which Go
            // would silently turn into U+FFFD.
            format!("{cause} (\\u escapes must form valid UTF-16; lone surrogates are rejected)")
        } else {
            cause
        };
        ParseError::Syntax {
            line: error.line(),
            column: error.column(),
            message,
        }
    })
}

/// One step of the path from the root to the value being parsed.
#[derive(Clone, Copy)]
enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

/// The path as a linked list on the stack, so parsing allocates nothing for it.
struct PathNode<'p> {
    segment: Segment<'p>,
    parent: Option<&'p PathNode<'p>>,
}

fn render_path(node: &PathNode<'_>) -> String {
    let mut segments = Vec::new();
    let mut current = Some(node);
    while let Some(step) = current {
        segments.push(step.segment);
        current = step.parent;
    }
    let mut path = String::new();
    for segment in segments.iter().rev() {
        match segment {
            Segment::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Index(index) => {
                let _ = write!(path, "[{index}]");
            }
        }
    }
    path
}

struct ValueSeed<'c, 'p> {
    /// Where the innermost failing value sat; set once, by the deepest container.
    failure: &'c RefCell<Option<String>>,
    at: Option<&'p PathNode<'p>>,
}

impl ValueSeed<'_, '_> {
    fn note_failure(&self, node: &PathNode<'_>) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(render_path(node));
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Json<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Json<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Json<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json<'de>, E> {
        if value >= 0 {
            Ok(Json::Number(Number::Unsigned(value.unsigned_abs())))
        } else {
            Ok(Json::Number(Number::Signed(value)))
        }
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(Number::Unsigned(value)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Json<'de>, E> {
        Ok(Json::Number(Number::Float(value)))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(value.to_string())))
    }

    fn visit_string<E>(self, value: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(value)))
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::new();
        loop {
            let node = PathNode {
                segment: Segment::Index(items.len()),
                parent: self.at,
            };
            let seed = ValueSeed {
                failure: self.failure,
                at: Some(&node),
            };
            match sequence.next_element_seed(seed) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Json::Array(items)),
                Err(error) => {
                    self.note_failure(&node);
                    return Err(error);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let node = PathNode {
                segment: Segment::Key(&key),
                parent: self.at,
            };
            let seed = ValueSeed {
                failure: self.failure,
                at: Some(&node),
            };
            match map.next_value_seed(seed) {
                Ok(value) => members.push((key, value)),
                Err(error) => {
                    self.note_failure(&node);
                    return Err(error);
                }
            }
        }
        Ok(Json::Object(members))
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(value))
    }
}

/// The exact text of a top-level member's value in `text`, which must be a
/// JSON object that [`parse`] accepted; the last duplicate wins. Used where a
/// value must be kept byte for byte (a stored metadata object).
pub(crate) fn raw_member<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let bytes = text.as_bytes();
    let mut found = None;
    let mut depth = 0_usize;
    let mut index = 0;
    // Start of the last string that closed at depth 1 (a key candidate).
    let mut last_string: Option<(usize, usize)> = None;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => {
                let start = index + 1;
                index += 1;
                while index < bytes.len() && bytes[index] != b'"' {
                    if bytes[index] == b'\\' {
                        index += 1;
                    }
                    index += 1;
                }
                if depth == 1 {
                    last_string = Some((start, index));
                }
            }
            b':' if depth == 1 => {
                if let Some((start, end)) = last_string.take()
                    && &text[start..end] == key
                {
                    let value_start = index + 1;
                    let value_end = value_end(bytes, value_start);
                    found = Some(text[value_start..value_end].trim());
                    index = value_end;
                    continue;
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        index += 1;
    }
    found
}

/// Where the value starting at `start` (after optional whitespace) ends.
fn value_end(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0_usize;
    let mut index = start;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => {
                index += 1;
                while index < bytes.len() && bytes[index] != b'"' {
                    if bytes[index] == b'\\' {
                        index += 1;
                    }
                    index += 1;
                }
                if depth == 0 {
                    return (index + 1).min(bytes.len());
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return index;
                }
                depth -= 1;
                if depth == 0 {
                    return index + 1;
                }
            }
            b',' if depth == 0 => return index,
            _ => {}
        }
        index += 1;
    }
    bytes.len()
}

/// Bytes [`write_string`] looks at: the ones it escapes, and the first byte of
/// U+2028 and U+2029.
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[b'&' as usize] = true;
    table[0xe2] = true;
    table
};

/// Writes a JSON string literal the way Go's `encoding/json` does: `<`, `>`,
/// `&`, U+2028 and U+2029 escaped as `\uXXXX`, other non-ASCII text raw.
pub(crate) fn write_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        // Eight plain bytes at a time (most texts are plain ASCII end to end).
        if let Some(word) = bytes.get(index..index + 8)
            && plain_word(word)
        {
            index += 8;
            continue;
        }
        let byte = bytes[index];
        if !SPECIAL[usize::from(byte)] {
            index += 1;
            continue;
        }
        let mut control = [b'\\', b'u', b'0', b'0', 0, 0];
        let (escape, width): (&str, usize) = match byte {
            b'"' => ("\\\"", 1),
            b'\\' => ("\\\\", 1),
            b'\n' => ("\\n", 1),
            b'\r' => ("\\r", 1),
            b'\t' => ("\\t", 1),
            b'<' => ("\\u003c", 1),
            b'>' => ("\\u003e", 1),
            b'&' => ("\\u0026", 1),
            0x00..=0x1f => {
                control[4] = HEX[usize::from(byte >> 4)];
                control[5] = HEX[usize::from(byte & 0x0f)];
                (std::str::from_utf8(&control).unwrap_or_default(), 1)
            }
            // U+2028 and U+2029 are E2 80 A8 / E2 80 A9 in UTF-8.
            _ if bytes.get(index + 1) == Some(&0x80)
                && matches!(bytes.get(index + 2), Some(0xa8 | 0xa9)) =>
            {
                let escape = if bytes[index + 2] == 0xa8 {
                    "\\u2028"
                } else {
                    "\\u2029"
                };
                (escape, 3)
            }
            _ => {
                index += 1;
                continue;
            }
        };
        out.push_str(&text[start..index]);
        out.push_str(escape);
        index += width;
        start = index;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// True when none of the eight bytes is one [`SPECIAL`] flags, nor any other
/// non-ASCII byte (a word test that never says "plain" wrongly; a word it
/// rejects is looked at byte by byte).
#[inline]
fn plain_word(word: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of a byte is set where the byte was zero (it can also be set
    // above such a byte, which only turns a word down).
    fn zero_bytes(word: u64) -> u64 {
        word.wrapping_sub(ONES) & !word & HIGH
    }
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(word);
    let word = u64::from_le_bytes(bytes);
    let flagged = (word & HIGH)
        | (word.wrapping_sub(0x20 * ONES) & !word & HIGH)
        | zero_bytes(word ^ (u64::from(b'"') * ONES))
        | zero_bytes(word ^ (u64::from(b'\\') * ONES))
        | zero_bytes(word ^ (u64::from(b'<') * ONES))
        | zero_bytes(word ^ (u64::from(b'>') * ONES))
        | zero_bytes(word ^ (u64::from(b'&') * ONES));
    flagged == 0
}

/// Writes a number in shortest form (integral doubles without a fraction).
pub(crate) fn write_number(out: &mut String, number: Number) {
    match number {
        Number::Unsigned(value) => {
            let _ = write!(out, "{value}");
        }
        Number::Signed(value) => {
            let _ = write!(out, "{value}");
        }
        Number::Float(value) => {
            let magnitude = value.abs();
            if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
                let _ = write!(out, "{value:e}");
            } else {
                let _ = write!(out, "{value}");
            }
        }
    }
}

/// Compact JSON in document order (used for text coercion of objects/arrays).
pub(crate) fn write_compact(out: &mut String, value: &Json<'_>) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Number(number) => write_number(out, *number),
        Json::String(text) => write_string(out, text),
        Json::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_compact(out, item);
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            for (index, (key, item)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_compact(out, item);
            }
            out.push('}');
        }
    }
}

/// The first eight bytes of a key as a big-endian number (zero-padded). Keys
/// whose numbers differ compare bytewise as their numbers do, so sorting and
/// searching compare one integer before they compare bytes.
pub(crate) fn key_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0_u8; 8];
    let length = key.len().min(8);
    bytes[..length].copy_from_slice(&key[..length]);
    u64::from_be_bytes(bytes)
}

/// The members of an object in Go map order: keys sorted bytewise, and for a
/// duplicated key only its last occurrence.
pub(crate) fn sorted_members<'o, 'a>(
    members: &'o [(Cow<'a, str>, Json<'a>)],
) -> Vec<&'o (Cow<'a, str>, Json<'a>)> {
    let prefixes: Vec<u64> = members
        .iter()
        .map(|(key, _)| key_prefix(key.as_bytes()))
        .collect();
    let mut order: Vec<usize> = (0..members.len()).collect();
    // Stable sort keeps duplicates in document order, so the last one of a run wins.
    order.sort_by(|left, right| {
        prefixes[*left].cmp(&prefixes[*right]).then_with(|| {
            members[*left]
                .0
                .as_bytes()
                .cmp(members[*right].0.as_bytes())
        })
    });
    let mut sorted: Vec<&(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(order.len());
    for index in order {
        let entry = &members[index];
        match sorted.last_mut() {
            Some(previous) if previous.0 == entry.0 => *previous = entry,
            _ => sorted.push(entry),
        }
    }
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_members_are_cut_out_byte_for_byte() {
        let text = r#"{"a":"x:\"}","meta" : {"n":12.0,"s":"}\"{"} ,"b":[1,{"meta":2}],"meta2":3}"#;
        assert_eq!(raw_member(text, "meta"), Some(r#"{"n":12.0,"s":"}\"{"}"#));
        assert_eq!(raw_member(text, "meta2"), Some("3"));
        assert_eq!(raw_member(text, "a"), Some(r#""x:\"}""#));
        assert_eq!(raw_member(text, "missing"), None);
        assert_eq!(
            raw_member(r#"{"k":1,"k":{"z":true}}"#, "k"),
            Some(r#"{"z":true}"#)
        );
    }

    #[test]
    fn strings_borrow_and_duplicates_resolve_to_the_last() {
        let value = parse(r#"{"a":"x","a":"y","b":"q\"uote"}"#).expect("valid JSON");
        let object = value.as_object().expect("object");
        assert_eq!(member(object, "a"), Some(&Json::String(Cow::Borrowed("y"))));
        assert!(matches!(
            member(object, "a"),
            Some(Json::String(Cow::Borrowed(_)))
        ));
        assert!(matches!(
            member(object, "b"),
            Some(Json::String(Cow::Owned(_)))
        ));
    }

    #[test]
    fn overflowing_number_names_its_field() {
        let error = parse(r#"{"a":{"b":[1,2e999]}}"#).expect_err("overflow");
        assert_eq!(
            error,
            ParseError::NumberOutOfRange {
                path: "a.b[1]".to_string()
            }
        );
        assert_eq!(
            error.to_string(),
            "a.b[1] is out of the 64-bit integer range"
        );
    }

    #[test]
    fn syntax_errors_carry_position_and_cause() {
        let error = parse(r#"{"a":1"#).expect_err("truncated");
        assert_eq!(
            error.to_string(),
            "invalid JSON at line 1 column 6: EOF while parsing an object"
        );
        let error = parse(r#"{"a":1}{"b":2}"#).expect_err("two values");
        assert!(error.to_string().contains("trailing characters"), "{error}");
    }

    #[test]
    fn deep_nesting_fails_cleanly() {
        let text = format!("{}{}", "[".repeat(600), "]".repeat(600));
        let error = parse(&text).expect_err("too deep");
        assert!(
            error.to_string().contains("recursion limit exceeded"),
            "{error}"
        );
    }

    #[test]
    fn writer_escapes_like_go() {
        let mut out = String::new();
        write_string(&mut out, "<a&b>\u{2028}\"\\\n\u{1}é");
        assert_eq!(out, "\"\\u003ca\\u0026b\\u003e\\u2028\\\"\\\\\\n\\u0001é\"");
        let mut out = String::new();
        write_string(&mut out, "€\u{2029}\u{1f}\r\t\u{2027}x\u{e2}");
        assert_eq!(out, "\"€\\u2029\\u001f\\r\\t\u{2027}x\u{e2}\"");
        let mut out = String::new();
        write_string(&mut out, "plain text, no escapes");
        assert_eq!(out, "\"plain text, no escapes\"");
    }

    #[test]
    fn the_writer_finds_every_escape_wherever_it_sits_in_a_word() {
        // Go's escaping, one character at a time.
        fn reference(text: &str) -> String {
            let mut out = String::from("\"");
            for character in text.chars() {
                match character {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '<' => out.push_str("\\u003c"),
                    '>' => out.push_str("\\u003e"),
                    '&' => out.push_str("\\u0026"),
                    '\u{2028}' => out.push_str("\\u2028"),
                    '\u{2029}' => out.push_str("\\u2029"),
                    control if u32::from(control) < 0x20 => {
                        out.push_str(&format!("\\u{:04x}", u32::from(control)));
                    }
                    other => out.push(other),
                }
            }
            out.push('"');
            out
        }
        let specials = [
            "\"", "\\", "\n", "\u{1}", "\u{1f}", "<", ">", "&", "\u{2028}", "\u{2029}", "é", "€",
            "\u{2027}", " ", "~", "\u{7f}",
        ];
        for length in 0..20 {
            for at in 0..=length {
                for special in specials {
                    let text = format!("{}{special}{}", "a".repeat(at), "b".repeat(length - at));
                    let mut out = String::new();
                    write_string(&mut out, &text);
                    assert_eq!(out, reference(&text), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn sorted_members_keep_last_duplicate() {
        let value = parse(r#"{"b":1,"a":2,"b":3}"#).expect("valid JSON");
        let object = value.as_object().expect("object");
        let sorted = sorted_members(object);
        let mut out = String::new();
        for (key, item) in sorted {
            out.push_str(key);
            write_compact(&mut out, item);
        }
        assert_eq!(out, "a2b3");
    }
}
