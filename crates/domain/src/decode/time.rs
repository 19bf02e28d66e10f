//! Event timestamps: the forms CPA and older producers send, and the Go
//! `RFC3339Nano` UTC text that goes into the dedupe hash.
//!
//! The text must match Go bit for bit, so parsing and printing are done by
//! hand: RFC 3339 (upper-case `T` and `Z` only, any offset, 0–9+ fractional
//! digits) and two zone-less forms read as UTC.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::Offset;

/// An instant as stored: Unix milliseconds plus the canonical UTC text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventTime {
    pub(crate) ms: i64,
    pub(crate) text: String,
}

/// Numbers below this are seconds, at or above it milliseconds (CPAMP rule).
const SECONDS_LIMIT: i64 = 10_000_000_000;

/// An integer from a JSON number or integer string: seconds or milliseconds.
/// `None` if the instant is outside the years jiff can represent.
pub(crate) fn from_epoch_number(value: i64) -> Option<EventTime> {
    let ms = if value < SECONDS_LIMIT {
        value.checked_mul(1000)?
    } else {
        value
    };
    from_millis(ms)
}

/// Formats Unix milliseconds (at most three fractional digits, zeros trimmed).
pub(crate) fn from_millis(ms: i64) -> Option<EventTime> {
    let timestamp = Timestamp::from_millisecond(ms).ok()?;
    let text = format_utc(timestamp)?;
    Some(EventTime { ms, text })
}

/// Parses RFC 3339 (`2026-05-06T08:30:15.5+08:00`) or the naive forms
/// `YYYY-MM-DD HH:MM:SS[.f]` / `YYYY-MM-DDTHH:MM:SS[.f]` (read as UTC).
/// Anything else (date only, lower-case `t`/`z`, out-of-range fields) is `None`.
pub(crate) fn parse_text(text: &str) -> Option<EventTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 {
        return None;
    }
    let year = digits(bytes, 0, 4)?;
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    let hour = digits(bytes, 11, 2)?;
    let minute = digits(bytes, 14, 2)?;
    let second = digits(bytes, 17, 2)?;
    if bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let separator = bytes[10];
    if separator != b'T' && separator != b' ' {
        return None;
    }
    let mut position = 19;
    let mut nanos: i32 = 0;
    if bytes.get(position) == Some(&b'.') {
        position += 1;
        let start = position;
        while position < bytes.len() && bytes[position].is_ascii_digit() {
            position += 1;
        }
        if position == start {
            return None;
        }
        // Digits beyond nanoseconds are dropped, as Go does.
        let mut scale = 100_000_000;
        for digit in &bytes[start..position.min(start + 9)] {
            nanos += i32::from(digit - b'0') * scale;
            scale /= 10;
        }
    }
    let rest = &bytes[position..];
    let offset_seconds: i32 = match rest {
        [] => 0,
        [b'Z'] if separator == b'T' => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] if separator == b'T' => {
            let hours = two_digits(*h1, *h2)?;
            let minutes = two_digits(*m1, *m2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'-' { -magnitude } else { magnitude }
        }
        _ => return None,
    };
    let civil = DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    let offset = Offset::from_seconds(offset_seconds).ok()?;
    let timestamp = offset.to_timestamp(civil).ok()?;
    let text = format_utc(timestamp)?;
    // Go's UnixMilli floors sub-millisecond digits; for instants after 1970
    // that is the same as truncating them.
    let ms = i64::try_from(timestamp.as_nanosecond().div_euclid(1_000_000)).ok()?;
    Some(EventTime { ms, text })
}

fn digits(bytes: &[u8], start: usize, count: usize) -> Option<i32> {
    let mut value = 0;
    for byte in bytes.get(start..start + count)? {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i32::from(byte - b'0');
    }
    Some(value)
}

fn two_digits(high: u8, low: u8) -> Option<i32> {
    if high.is_ascii_digit() && low.is_ascii_digit() {
        Some(i32::from(high - b'0') * 10 + i32::from(low - b'0'))
    } else {
        None
    }
}

/// Go `time.RFC3339Nano` of the instant in UTC: fraction only when non-zero,
/// trailing zeros removed. Years outside 0000–9999 have no RFC 3339 form.
fn format_utc(timestamp: Timestamp) -> Option<String> {
    let civil = Offset::UTC.to_datetime(timestamp);
    let year = civil.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut text = String::with_capacity(30);
    let _ = write!(
        text,
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second()
    );
    let nanos = civil.subsec_nanosecond();
    if nanos > 0 {
        let mut fraction = format!("{nanos:09}");
        while fraction.ends_with('0') {
            fraction.pop();
        }
        text.push('.');
        text.push_str(&fraction);
    }
    text.push('Z');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(input: &str) -> Option<String> {
        parse_text(input).map(|time| time.text)
    }

    #[test]
    fn rfc3339_forms_normalise_to_utc() {
        assert_eq!(
            text("2026-08-22T22:00:23.007+08:00").as_deref(),
            Some("2026-08-22T14:00:23.007Z")
        );
        assert_eq!(
            text("2026-05-06T08:30:15.120+08:00").as_deref(),
            Some("2026-05-06T00:30:15.12Z")
        );
        assert_eq!(
            text("2026-05-06T08:30:15.000Z").as_deref(),
            Some("2026-05-06T08:30:15Z")
        );
        assert_eq!(
            text("2026-05-06T08:30:15.123456789Z").as_deref(),
            Some("2026-05-06T08:30:15.123456789Z")
        );
        assert_eq!(
            text("2026-08-22T09:05:00-05:00").as_deref(),
            Some("2026-08-22T14:05:00Z")
        );
        assert_eq!(
            parse_text("2026-08-22T14:00:23.007999Z").map(|t| t.ms),
            Some(1_787_407_223_007)
        );
    }

    #[test]
    fn naive_forms_are_utc() {
        assert_eq!(
            text("2026-05-06 08:30:15").as_deref(),
            Some("2026-05-06T08:30:15Z")
        );
        assert_eq!(
            text("2026-05-06 08:30:15.5").as_deref(),
            Some("2026-05-06T08:30:15.5Z")
        );
        assert_eq!(
            text("2026-05-06T08:30:15").as_deref(),
            Some("2026-05-06T08:30:15Z")
        );
    }

    #[test]
    fn rejected_forms() {
        for input in [
            "2026-05-06",
            "2026-05-06t08:30:15Z",
            "2026-05-06T08:30:15z",
            "2026-05-06 08:30:15Z",
            "2026-13-45T25:61:00Z",
            "2026-02-30T00:00:00Z",
            "2026-05-06T08:30:15.Z",
            "2026-05-06T08:30:15+8:00",
            "not-a-time",
            "",
        ] {
            assert_eq!(parse_text(input), None, "{input}");
        }
    }

    #[test]
    fn epoch_numbers_pick_seconds_or_millis() {
        let seconds = from_epoch_number(1_767_225_600).expect("in range");
        assert_eq!(
            (seconds.ms, seconds.text.as_str()),
            (1_767_225_600_000, "2026-01-01T00:00:00Z")
        );
        let millis = from_epoch_number(1_767_225_600_123).expect("in range");
        assert_eq!(millis.text, "2026-01-01T00:00:00.123Z");
        let boundary = from_epoch_number(9_999_999_999).expect("in range");
        assert_eq!(boundary.ms, 9_999_999_999_000);
        assert_eq!(
            from_epoch_number(10_000_000_000).map(|t| t.ms),
            Some(10_000_000_000)
        );
        assert_eq!(
            from_epoch_number(-86_400).map(|t| t.text),
            Some("1969-12-31T00:00:00Z".to_string())
        );
        assert_eq!(from_epoch_number(i64::MAX), None);
        assert_eq!(from_epoch_number(i64::MIN), None);
    }
}
