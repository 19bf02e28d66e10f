//! Reading a usage import: cpamp's and the Go server's JSONL/NDJSON exports,
//! CPA-style records, a JSON array of either, and the legacy usage snapshots.
//!
//! [`read_import`] is a pure function of the bytes it reads: it detects the
//! format, turns every record into a [`UsageEvent`] handed to the caller's sink
//! one at a time, and counts what it could not use. Memory stays bounded at any
//! input size: JSONL is read line by line (at most [`MAX_LINE_BYTES`] per line),
//! arrays element by element, and a legacy snapshot detail by detail.
//!
//! Format detection (first non-whitespace byte):
//! - `[`: a JSON array of records (`usage_service_jsonl`).
//! - `{`: the first JSON value decides. An object with a non-empty `event_hash`
//!   is an exported record, followed by more JSONL. An object with `usage.apis`
//!   is a legacy usage export, one with `apis` a legacy usage payload; the rest
//!   of the input must then be whitespace. Only counters (`total_requests`, …) is
//!   a summary without details: nothing to import. Anything else is a CPA-style
//!   record followed by more JSONL.
//! - anything else: JSONL, one record per line; blank lines are skipped.
//!
//! Deviation from the Go server: it took any object with a `usage` key for a
//! legacy export, so a CPA record whose token counts sit under `usage` was
//! rejected. Here `usage` means a snapshot only when it holds `apis` or the
//! snapshot counters. A line longer than [`MAX_LINE_BYTES`] is one failed line
//! (Go aborted the whole import).

use std::borrow::Cow;
use std::io::BufRead;
use std::ops::ControlFlow;

use crate::decode::json::{self, Json};
use crate::decode::{decode_exported, decode_object};
use crate::event::UsageEvent;

/// Longest JSONL line (and largest first object) read.
pub const MAX_LINE_BYTES: usize = 10 * 1024 * 1024;
/// Most problems listed one by one; the counters keep counting past it.
pub const MAX_ISSUES: usize = 100;

/// The detected input format (the wire names of the Go server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// JSONL/NDJSON or a JSON array of exported or CPA-style records.
    UsageServiceJsonl,
    /// `{"usage": {"apis": …}}`.
    LegacyUsageExport,
    /// `{"apis": …}`.
    LegacyUsagePayload,
}

impl ImportFormat {
    /// The format's name in import results.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportFormat::UsageServiceJsonl => "usage_service_jsonl",
            ImportFormat::LegacyUsageExport => "legacy_usage_export",
            ImportFormat::LegacyUsagePayload => "legacy_usage_payload",
        }
    }
}

/// Warnings every legacy snapshot import carries.
pub const LEGACY_WARNINGS: &[&str] = &[
    "legacy_usage_metadata_is_partial",
    "legacy_usage_source_matching_may_be_approximate",
];

/// Where a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// 1-based line of a JSONL input.
    Line(u64),
    /// 1-based element of a JSON array.
    Element(u64),
    /// Inside a legacy snapshot: endpoint, model and (1-based) detail, when known.
    Legacy {
        /// The endpoint the record is listed under.
        endpoint: String,
        /// The model, when the record is inside one.
        model: Option<String>,
        /// 1-based position among the model's details.
        detail: Option<u64>,
    },
}

/// A record that could not be imported, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportIssue {
    /// Where in the input the record is.
    pub location: Location,
    /// Why it could not be imported.
    pub message: String,
}

/// Why reading stopped before the end of the input.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input holds nothing to import.
    #[error("empty usage import payload")]
    Empty,
    /// The input itself could not be read (for example the upload broke off).
    #[error("read import: {0}")]
    Read(#[from] std::io::Error),
    /// The input is not the JSON its first byte promised.
    #[error("{0}")]
    Syntax(String),
    /// A legacy snapshot (or a summary) without any request details.
    #[error(
        "legacy usage export does not contain request details: the file holds only totals, which cannot become events; export from a server that keeps request details"
    )]
    NoDetails,
    /// The sink asked to stop (for example the import was cancelled).
    #[error("import stopped")]
    Stopped,
}

/// What reading an input produced.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// `None` until the first byte decided it (an empty input has none).
    pub format: Option<ImportFormat>,
    /// Events handed to the sink.
    pub events: u64,
    /// Records (lines, elements, details) that could not be read.
    pub failed: u64,
    /// Legacy models without details and summaries without any.
    pub unsupported: u64,
    /// Notes about the input (a legacy format's limits).
    pub warnings: Vec<&'static str>,
    /// The first [`MAX_ISSUES`] failed records with their location.
    pub issues: Vec<ImportIssue>,
    /// Why reading stopped early; `None` when the whole input was read.
    pub error: Option<ImportError>,
}

impl ImportReport {
    fn fail(&mut self, location: Location, message: impl Into<String>) {
        self.failed += 1;
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(ImportIssue {
                location,
                message: message.into(),
            });
        }
    }
}

/// The sink every event goes to; `Break` stops the import.
pub type EventSinkFn<'s> = dyn FnMut(UsageEvent) -> ControlFlow<()> + 's;

/// Reads a whole import from `input`, handing each event to `sink` in input
/// order. `now_ms` stands in for missing timestamps and creation times.
pub fn read_import<R: BufRead>(
    mut input: R,
    now_ms: i64,
    sink: &mut EventSinkFn<'_>,
) -> ImportReport {
    let mut report = ImportReport::default();
    let mut reader = Reader {
        sink,
        now_ms,
        report: &mut report,
    };
    if let Err(error) = reader.run(&mut input) {
        reader.report.error = Some(error);
    }
    report
}

struct Reader<'r, 's> {
    sink: &'r mut EventSinkFn<'s>,
    now_ms: i64,
    report: &'r mut ImportReport,
}

impl Reader<'_, '_> {
    fn run<R: BufRead>(&mut self, input: &mut R) -> Result<(), ImportError> {
        let Some((first, mut line)) = skip_leading_whitespace(input)? else {
            return Err(ImportError::Empty);
        };
        self.report.format = Some(ImportFormat::UsageServiceJsonl);
        match first {
            b'[' => self.read_array(input),
            b'{' => {
                let first_line = line;
                let scanned = scan_first_value(input, &mut line)?;
                match scanned {
                    FirstValue::BrokenLine(bytes) => {
                        // A JSONL file whose first line is broken.
                        self.line(&bytes, first_line)?;
                        self.read_lines(input, first_line + 1)
                    }
                    FirstValue::Complete(bytes) => match self.first_object(&bytes, line)? {
                        First::Snapshot(format) => {
                            self.read_legacy(&bytes[..], Some(format))?;
                            expect_only_whitespace(input)
                        }
                        First::Record => self.read_lines(input, line),
                        // Not one JSON value after all: read it all as JSONL.
                        First::NotJson => {
                            let mut replay = std::io::Read::chain(&bytes[..], input);
                            let mut buffered = std::io::BufReader::new(&mut replay);
                            self.read_lines(&mut buffered, first_line)
                        }
                    },
                    FirstValue::TooLarge(head) => {
                        // Only a snapshot can be this large; read it as one.
                        let chained = std::io::Read::chain(&head[..], input);
                        let mut buffered = std::io::BufReader::new(chained);
                        self.read_legacy(&mut buffered, None)?;
                        expect_only_whitespace(&mut buffered)
                    }
                }
            }
            _ => self.read_lines(input, line),
        }
    }

    fn emit(&mut self, event: UsageEvent) -> Result<(), ImportError> {
        self.report.events += 1;
        match (self.sink)(event) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(ImportError::Stopped),
        }
    }

    /// One record (an object that is not a snapshot): exported or CPA-style.
    /// `text` is the record's JSON text.
    fn record(
        &mut self,
        value: &Json<'_>,
        text: &str,
        location: Location,
    ) -> Result<(), ImportError> {
        let Json::Object(members) = value else {
            self.report.fail(
                location,
                format!("record is not a JSON object (found {})", value.type_name()),
            );
            return Ok(());
        };
        let decoded = if has_event_hash(members) {
            decode_exported(members, Some(text), self.now_ms)
        } else {
            decode_object(members, self.now_ms)
        };
        match decoded {
            Ok(event) => self.emit(event),
            Err(reason) => {
                self.report.fail(location, reason);
                Ok(())
            }
        }
    }

    /// Parses and imports one JSONL line (already without its newline).
    fn line(&mut self, bytes: &[u8], number: u64) -> Result<(), ImportError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Ok(());
        }
        let text = match std::str::from_utf8(trimmed) {
            Ok(text) => text,
            Err(error) => {
                self.report.fail(
                    Location::Line(number),
                    format!(
                        "line is not valid UTF-8 (invalid byte at column {})",
                        error.valid_up_to() + 1
                    ),
                );
                return Ok(());
            }
        };
        match json::parse(text) {
            Ok(value) => self.record(&value, text, Location::Line(number)),
            Err(error) => {
                self.report.fail(Location::Line(number), error.to_string());
                Ok(())
            }
        }
    }

    /// The rest of the input as JSONL; `line` is the number of the current line.
    fn read_lines<R: BufRead>(&mut self, input: &mut R, mut line: u64) -> Result<(), ImportError> {
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            let (ended, too_long) = read_line(input, &mut buffer)?;
            if too_long {
                self.report.fail(
                    Location::Line(line),
                    format!(
                        "line is longer than {} MiB; split the record or import it on its own",
                        MAX_LINE_BYTES / (1024 * 1024)
                    ),
                );
            } else {
                self.line(&buffer, line)?;
            }
            if !ended {
                return Ok(());
            }
            line += 1;
        }
    }

    fn read_array<R: BufRead>(&mut self, input: &mut R) -> Result<(), ImportError> {
        let mut deserializer = serde_json::Deserializer::from_reader(&mut *input);
        let mut stop = None;
        let seed = ArraySeed {
            reader: self,
            stop: &mut stop,
        };
        let result = serde::de::DeserializeSeed::deserialize(seed, &mut deserializer);
        if let Some(error) = stop {
            return Err(error);
        }
        result.map_err(|error| syntax("invalid JSON array", &error))?;
        drop(deserializer);
        expect_only_whitespace(input)
    }

    /// Looks at the first object: a snapshot to read, a record (imported now;
    /// the input continues as JSONL) or no JSON value at all.
    fn first_object(&mut self, bytes: &[u8], line: u64) -> Result<First, ImportError> {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Ok(First::NotJson);
        };
        let Ok(value) = json::parse(text) else {
            return Ok(First::NotJson);
        };
        let Json::Object(members) = &value else {
            return Ok(First::NotJson);
        };
        match classify(members) {
            Shape::Record => {
                self.record(&value, text, Location::Line(line))?;
                Ok(First::Record)
            }
            Shape::Snapshot(format) => Ok(First::Snapshot(format)),
            Shape::Empty(format) => {
                self.report.format = Some(format);
                self.report.unsupported += 1;
                Err(ImportError::NoDetails)
            }
        }
    }

    /// Reads a legacy snapshot; `format` is known when the object was classified
    /// beforehand, else the top-level key decides.
    fn read_legacy<R: std::io::Read>(
        &mut self,
        input: R,
        format: Option<ImportFormat>,
    ) -> Result<(), ImportError> {
        if let Some(format) = format {
            self.report.format = Some(format);
        }
        self.report.warnings = LEGACY_WARNINGS.to_vec();
        let events_before = self.report.events;
        let mut deserializer = serde_json::Deserializer::from_reader(input);
        let mut stop = None;
        let result = serde::de::DeserializeSeed::deserialize(
            legacy::TopSeed {
                reader: self,
                stop: &mut stop,
            },
            &mut deserializer,
        );
        if let Some(error) = stop {
            return Err(error);
        }
        result.map_err(|error| syntax("invalid legacy usage snapshot", &error))?;
        if self.report.format == Some(ImportFormat::UsageServiceJsonl) {
            return Err(ImportError::Syntax(
                "the first JSON object is larger than 10 MiB and is not a usage snapshot (no `usage.apis` or `apis`)".to_string(),
            ));
        }
        if self.report.events == events_before {
            return Err(ImportError::NoDetails);
        }
        Ok(())
    }
}

fn syntax(context: &str, error: &serde_json::Error) -> ImportError {
    ImportError::Syntax(format!("{context}: {error}"))
}

fn has_event_hash(members: &[(Cow<'_, str>, Json<'_>)]) -> bool {
    ["event_hash", "eventHash"].iter().any(|key| {
        matches!(json::member(members, key), Some(Json::String(text)) if !text.trim().is_empty())
            || matches!(json::member(members, key), Some(Json::Number(_)))
    })
}

enum First {
    Snapshot(ImportFormat),
    Record,
    NotJson,
}

enum Shape {
    Record,
    Snapshot(ImportFormat),
    /// A snapshot or summary without request details.
    Empty(ImportFormat),
}

const SUMMARY_KEYS: &[&str] = &["total_requests", "success_count", "failure_count"];

fn classify(members: &[(Cow<'_, str>, Json<'_>)]) -> Shape {
    if has_event_hash(members) {
        return Shape::Record;
    }
    let non_empty_object =
        |value: Option<&Json<'_>>| matches!(value, Some(Json::Object(inner)) if !inner.is_empty());
    let has_summary = |object: &[(Cow<'_, str>, Json<'_>)]| {
        SUMMARY_KEYS
            .iter()
            .any(|key| json::member(object, key).is_some())
    };
    if let Some(Json::Object(usage)) = json::member(members, "usage") {
        if non_empty_object(json::member(usage, "apis")) {
            return Shape::Snapshot(ImportFormat::LegacyUsageExport);
        }
        if json::member(usage, "apis").is_some() || has_summary(usage) {
            return Shape::Empty(ImportFormat::LegacyUsageExport);
        }
    }
    if non_empty_object(json::member(members, "apis")) {
        return Shape::Snapshot(ImportFormat::LegacyUsagePayload);
    }
    if has_summary(members) {
        return Shape::Empty(ImportFormat::LegacyUsagePayload);
    }
    Shape::Record
}

/// Skips whitespace (and a UTF-8 byte-order mark) before the first value.
/// Returns the first byte (not consumed) and its 1-based line.
fn skip_leading_whitespace<R: BufRead>(input: &mut R) -> std::io::Result<Option<(u8, u64)>> {
    let mut line = 1;
    let mut at_start = true;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(None);
        }
        if at_start && available.starts_with(b"\xef\xbb\xbf") {
            input.consume(3);
            at_start = false;
            continue;
        }
        at_start = false;
        let mut used = 0;
        for &byte in available {
            if byte == b'\n' {
                line += 1;
            } else if !byte.is_ascii_whitespace() {
                input.consume(used);
                return Ok(Some((byte, line)));
            }
            used += 1;
        }
        input.consume(used);
    }
}

/// Reads up to the next `\n` (consumed, not stored). Returns whether a newline
/// ended the line and whether the line was longer than [`MAX_LINE_BYTES`]
/// (then the rest of it is skipped, not stored).
fn read_line<R: BufRead>(input: &mut R, buffer: &mut Vec<u8>) -> std::io::Result<(bool, bool)> {
    let mut too_long = false;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok((false, too_long));
        }
        let (chunk, ended) = match available.iter().position(|byte| *byte == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        if !too_long {
            if buffer.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                buffer.clear();
            } else {
                buffer.extend_from_slice(chunk);
            }
        }
        let used = chunk.len() + usize::from(ended);
        input.consume(used);
        if ended {
            return Ok((true, too_long));
        }
    }
}

/// Anything but whitespace after a snapshot or an array is an error.
fn expect_only_whitespace<R: BufRead>(input: &mut R) -> Result<(), ImportError> {
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(());
        }
        if available.iter().any(|byte| !byte.is_ascii_whitespace()) {
            return Err(ImportError::Syntax(
                "unexpected data after the JSON value: a snapshot or array must be the only value in the file".to_string(),
            ));
        }
        let used = available.len();
        input.consume(used);
    }
}

enum FirstValue {
    /// The whole first value.
    Complete(Vec<u8>),
    /// The first line is not JSON (nor the start of a multi-line value); the
    /// reader is positioned after its newline.
    BrokenLine(Vec<u8>),
    /// The first [`MAX_LINE_BYTES`] of a larger value; the reader is positioned after them.
    TooLarge(Vec<u8>),
}

/// Reads the first JSON object's bytes (brackets and strings tracked, nothing
/// parsed), counting the newlines inside it into `line`. After a complete
/// value the reader sits right behind its closing brace.
fn scan_first_value<R: BufRead>(input: &mut R, line: &mut u64) -> std::io::Result<FirstValue> {
    let mut bytes = Vec::new();
    let mut depth = 0_usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut checked_first_line = false;
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            // Unterminated: the parser reports the syntax error.
            return Ok(FirstValue::Complete(bytes));
        }
        let mut end = None;
        for (index, &byte) in available.iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if byte == b'\\' {
                    escaped = true;
                } else if byte == b'"' {
                    in_string = false;
                } else if byte == b'\n' {
                    *line += 1;
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = Some(index + 1);
                        break;
                    }
                }
                b'\n' => {
                    if !checked_first_line {
                        checked_first_line = true;
                        let mut head = bytes.clone();
                        head.extend_from_slice(&available[..index]);
                        if !is_json_prefix(&head) {
                            input.consume(index + 1);
                            *line += 1;
                            return Ok(FirstValue::BrokenLine(head));
                        }
                    }
                    *line += 1;
                }
                _ => {}
            }
        }
        let used = end.unwrap_or(available.len());
        if bytes.len() + used > MAX_LINE_BYTES {
            let room = MAX_LINE_BYTES - bytes.len();
            bytes.extend_from_slice(&available[..room]);
            input.consume(room);
            return Ok(FirstValue::TooLarge(bytes));
        }
        bytes.extend_from_slice(&available[..used]);
        input.consume(used);
        if end.is_some() {
            return Ok(FirstValue::Complete(bytes));
        }
    }
}

/// True when `bytes` is valid JSON so far: complete, or cut off before its end
/// (a multi-line value). False for a syntax error.
fn is_json_prefix(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        Ok(_) => true,
        Err(error) => error.is_eof(),
    }
}

/// Deserializes a JSON array element by element.
struct ArraySeed<'a, 'r, 's> {
    reader: &'a mut Reader<'r, 's>,
    stop: &'a mut Option<ImportError>,
}

impl<'de> serde::de::DeserializeSeed<'de> for ArraySeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ArraySeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON array of usage records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0_u64;
        while let Some(raw) = seq.next_element::<Box<serde_json::value::RawValue>>()? {
            index += 1;
            let outcome = match json::parse(raw.get()) {
                Ok(value) => self
                    .reader
                    .record(&value, raw.get(), Location::Element(index)),
                Err(error) => {
                    self.reader
                        .report
                        .fail(Location::Element(index), error.to_string());
                    Ok(())
                }
            };
            if let Err(error) = outcome {
                *self.stop = Some(error);
                return Err(serde::de::Error::custom("import stopped"));
            }
        }
        Ok(())
    }
}

mod legacy;

#[cfg(test)]
mod tests;
