//! Time zones and bucketing for analytics, with Go `time.Date` semantics.
//!
//! Buckets are instants (Unix ms). An hour bucket is the local wall-clock hour
//! start converted back to an instant; a day bucket is local midnight. Converting
//! a wall time back follows Go: an ambiguous wall time (DST fall-back) takes the
//! earlier instant, and a wall time inside a gap (spring-forward) is read with the
//! offset in force after the transition, which is also the earlier instant. jiff's
//! `earlier()` disambiguation gives exactly these two results.

#![warn(missing_docs)]

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use super::AnalyticsError;

/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// A quarter-hour in milliseconds.
pub const QUARTER_MS: i64 = 15 * MINUTE_MS;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// One (24-hour) day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Timeline granularity: the size of the local buckets of `timeline`,
/// `credential_timeline` and `api_key_timeline` (the response's `granularity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One bucket per local hour.
    Hour,
    /// One bucket per local day.
    Day,
}

impl Granularity {
    /// `hour` or `day` exactly (case-sensitive); anything else means auto:
    /// hour when the range is at most 24 h, else day.
    pub fn resolve(requested: Option<&str>, from_ms: i64, to_ms: i64) -> Granularity {
        match requested {
            Some("hour") => Granularity::Hour,
            Some("day") => Granularity::Day,
            _ if to_ms - from_ms <= DAY_MS => Granularity::Hour,
            _ => Granularity::Day,
        }
    }

    /// `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
}

/// An IANA time zone used for local buckets and labels.
#[derive(Debug, Clone)]
pub struct Zone {
    tz: TimeZone,
}

impl Default for Zone {
    fn default() -> Zone {
        Zone::utc()
    }
}

impl Zone {
    /// The UTC zone: what an empty `time_zone` means, and the default.
    pub fn utc() -> Zone {
        Zone { tz: TimeZone::UTC }
    }

    /// Parses a trimmed IANA name; empty means UTC. `Local` is not accepted: the
    /// server's own zone is meaningless to a browser client.
    pub fn parse(name: &str) -> Result<Zone, AnalyticsError> {
        let name = name.trim();
        if name.is_empty() || name == "UTC" {
            return Ok(Zone::utc());
        }
        TimeZone::get(name)
            .map(|tz| Zone { tz })
            .map_err(|_| AnalyticsError::InvalidTimeZone(name.to_string()))
    }

    fn local(&self, ms: i64) -> DateTime {
        let timestamp = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH);
        self.tz.to_datetime(timestamp)
    }

    fn instant(&self, local: DateTime) -> i64 {
        self.tz
            .to_ambiguous_timestamp(local)
            .earlier()
            .map(|timestamp| timestamp.as_millisecond())
            .unwrap_or(0)
    }

    /// Start of the local hour containing `ms`, as an instant.
    pub fn hour_bucket(&self, ms: i64) -> i64 {
        let local = self.local(ms);
        let start = local
            .with()
            .minute(0)
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .unwrap_or(local);
        self.instant(start)
    }

    /// Local midnight of the day containing `ms`, as an instant.
    pub fn day_bucket(&self, ms: i64) -> i64 {
        let local = self.local(ms);
        self.instant(local.date().to_datetime(jiff::civil::Time::midnight()))
    }

    /// The start of the local hour or day containing `ms`, as an instant.
    pub fn bucket(&self, granularity: Granularity, ms: i64) -> i64 {
        match granularity {
            Granularity::Hour => self.hour_bucket(ms),
            Granularity::Day => self.day_bucket(ms),
        }
    }

    /// `HH:mm` for hour buckets, `MM/DD` for day buckets, shown in this zone.
    pub fn label(&self, granularity: Granularity, bucket_ms: i64) -> String {
        let local = self.local(bucket_ms);
        match granularity {
            Granularity::Hour => format!("{:02}:{:02}", local.hour(), local.minute()),
            Granularity::Day => format!("{:02}/{:02}", local.month(), local.day()),
        }
    }

    /// Local (weekday 0 = Sunday, hour 0-23) of an instant.
    pub fn weekday_hour(&self, ms: i64) -> (i64, i64) {
        let local = self.local(ms);
        (
            i64::from(local.weekday().to_sunday_zero_offset()),
            i64::from(local.hour()),
        )
    }

    /// Local calendar date as a sortable integer (yyyymmdd).
    pub fn date_key(&self, ms: i64) -> i64 {
        let local = self.local(ms);
        i64::from(local.year()) * 10_000 + i64::from(local.month()) * 100 + i64::from(local.day())
    }

    /// True when every block of `block_ms` (aligned to UTC) inside `[from, to)` falls
    /// into a single local bucket, so pre-aggregated blocks can be mapped to local
    /// buckets without splitting. Checked per offset span and at every offset transition,
    /// so DST and odd offsets (+05:30, +05:45) are handled exactly, in time proportional
    /// to the transitions in the range, never to its length.
    pub fn lossless(
        &self,
        granularity: Granularity,
        block_ms: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> bool {
        let step = match granularity {
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        };
        if block_ms > step {
            return false;
        }
        // Between two offset transitions local buckets start at a fixed offset from
        // UTC, so the blocks there are lossless exactly when that offset is a multiple of
        // the block size; only the block around each transition needs a look of its own.
        // Walking transitions rather than blocks keeps any range cheap: a zone has a few
        // thousand transitions up to year 9999, a range of 10^18 ms has 10^12 blocks.
        let first_block = from_ms.div_euclid(block_ms) * block_ms;
        let mut at = Timestamp::from_millisecond(first_block).unwrap_or(Timestamp::UNIX_EPOCH);
        loop {
            let offset_ms = i64::from(self.tz.to_offset(at).seconds()) * 1000;
            if offset_ms.rem_euclid(block_ms) != 0 {
                return false;
            }
            let Some(transition) = self.tz.following(at).next() else {
                return true;
            };
            let transition_ms = transition.timestamp().as_millisecond();
            if transition_ms >= to_ms {
                return true;
            }
            if transition.timestamp() <= at {
                // Never expected from jiff; stop rather than walk in place.
                return false;
            }
            let block = transition_ms.div_euclid(block_ms) * block_ms;
            if self.bucket(granularity, block + block_ms - 1) != self.bucket(granularity, block) {
                return false;
            }
            at = transition.timestamp();
        }
    }
}

/// Per-block bucket lookup with a cache, for mapping many instants to buckets.
pub struct Bucketer<'z> {
    zone: &'z Zone,
    granularity: Granularity,
    cache_block: i64,
    cached: Option<(i64, i64)>,
    lossless_blocks: std::collections::HashMap<i64, Option<i64>>,
}

impl<'z> Bucketer<'z> {
    /// Buckets of `granularity` in `zone`.
    pub fn new(zone: &'z Zone, granularity: Granularity) -> Bucketer<'z> {
        Bucketer {
            zone,
            granularity,
            cache_block: QUARTER_MS,
            cached: None,
            lossless_blocks: std::collections::HashMap::new(),
        }
    }

    /// The bucket of `ms`. Results are cached per UTC quarter hour whenever the
    /// whole quarter maps to one bucket (true for every real-world offset).
    pub fn bucket(&mut self, ms: i64) -> i64 {
        let block = ms.div_euclid(self.cache_block);
        if let Some((cached_block, bucket)) = self.cached
            && cached_block == block
        {
            return bucket;
        }
        let entry = *self.lossless_blocks.entry(block).or_insert_with(|| {
            let start = block * QUARTER_MS;
            let first = self.zone.bucket(self.granularity, start);
            (self.zone.bucket(self.granularity, start + QUARTER_MS - 1) == first).then_some(first)
        });
        match entry {
            Some(bucket) => {
                self.cached = Some((block, bucket));
                bucket
            }
            None => self.zone.bucket(self.granularity, ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>()
            .map(|t| t.as_millisecond())
            .unwrap_or(i64::MIN)
    }

    #[test]
    fn new_york_fall_back_hours_share_the_earlier_bucket() {
        let zone = Zone::parse("America/New_York").expect("zone");
        let first = zone.hour_bucket(ms("2024-11-03T05:30:00Z"));
        let second = zone.hour_bucket(ms("2024-11-03T06:30:00Z"));
        assert_eq!(first, ms("2024-11-03T05:00:00Z"));
        assert_eq!(second, ms("2024-11-03T05:00:00Z"));
        assert_eq!(zone.label(Granularity::Hour, first), "01:00");
    }

    #[test]
    fn santiago_spring_forward_midnight_uses_the_later_offset() {
        let zone = Zone::parse("America/Santiago").expect("zone");
        let bucket = zone.day_bucket(ms("2024-09-08T12:00:00Z"));
        assert_eq!(bucket, ms("2024-09-08T03:00:00Z"));
        assert_eq!(zone.label(Granularity::Day, bucket), "09/07");
    }

    #[test]
    fn kolkata_and_kathmandu_buckets_follow_their_offsets() {
        let kolkata = Zone::parse(" Asia/Kolkata ").expect("zone");
        assert_eq!(
            kolkata.hour_bucket(ms("2025-01-01T01:10:00Z")),
            ms("2025-01-01T00:30:00Z")
        );
        assert_eq!(
            kolkata.day_bucket(ms("2025-01-01T20:00:00Z")),
            ms("2025-01-01T18:30:00Z")
        );
        assert_eq!(
            kolkata.label(Granularity::Hour, ms("2025-01-01T00:30:00Z")),
            "06:00"
        );
        let kathmandu = Zone::parse("Asia/Kathmandu").expect("zone");
        assert_eq!(
            kathmandu.hour_bucket(ms("2025-01-01T01:10:00Z")),
            ms("2025-01-01T00:15:00Z")
        );
        assert_eq!(
            kathmandu.day_bucket(ms("2025-01-01T20:00:00Z")),
            ms("2025-01-01T18:15:00Z")
        );
        assert!(!kolkata.lossless(
            Granularity::Hour,
            HOUR_MS,
            ms("2025-01-01T00:00:00Z"),
            ms("2025-01-02T00:00:00Z")
        ));
        assert!(kolkata.lossless(
            Granularity::Hour,
            QUARTER_MS,
            ms("2025-01-01T00:00:00Z"),
            ms("2025-01-02T00:00:00Z")
        ));
        assert!(kathmandu.lossless(
            Granularity::Day,
            QUARTER_MS,
            ms("2025-01-01T00:00:00Z"),
            ms("2025-01-09T00:00:00Z")
        ));
    }

    /// Every block of the range, one by one: the definition `lossless` must agree with.
    fn lossless_block_by_block(
        zone: &Zone,
        granularity: Granularity,
        block_ms: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> bool {
        let mut block = from_ms.div_euclid(block_ms) * block_ms;
        while block < to_ms {
            if zone.bucket(granularity, block + block_ms - 1) != zone.bucket(granularity, block) {
                return false;
            }
            block += block_ms;
        }
        true
    }

    #[test]
    fn lossless_agrees_with_every_block_across_transitions_and_odd_offsets() {
        let ranges = [
            // Spring transitions of both hemispheres' zones below.
            (ms("2025-02-20T00:00:00Z"), ms("2025-04-10T00:00:00Z")),
            // Autumn transitions, starting and ending mid-hour.
            (ms("2025-09-25T10:20:00Z"), ms("2025-11-05T07:50:00Z")),
            // A day without a transition.
            (ms("2025-06-01T00:00:00Z"), ms("2025-06-02T00:00:00Z")),
        ];
        for name in [
            "UTC",
            "Asia/Kolkata",
            "Asia/Kathmandu",
            "America/New_York",
            "Europe/Berlin",
            "America/St_Johns",
            "Australia/Adelaide",
            "Australia/Lord_Howe",
            "Pacific/Chatham",
        ] {
            let zone = Zone::parse(name).expect("zone");
            for granularity in [Granularity::Hour, Granularity::Day] {
                for block in [QUARTER_MS, HOUR_MS, DAY_MS] {
                    for (from, to) in ranges {
                        let expected = block <= granularity_step(granularity)
                            && lossless_block_by_block(&zone, granularity, block, from, to);
                        assert_eq!(
                            zone.lossless(granularity, block, from, to),
                            expected,
                            "{name} {granularity:?} block {block} ms, {from}..{to}"
                        );
                    }
                }
            }
        }
    }

    fn granularity_step(granularity: Granularity) -> i64 {
        match granularity {
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        }
    }

    /// A monitoring range may end anywhere up to `i64::MAX`; checking it must not walk
    /// its blocks (found by the `analytics` fuzz target: a range of 1.78e18 ms in a zone
    /// with daylight saving time never finished).
    #[test]
    fn lossless_is_cheap_on_huge_ranges() {
        let new_york = Zone::parse("America/New_York").expect("zone");
        let from = ms("2025-10-01T16:00:00Z");
        for to in [1_780_422_780_422_700_000, i64::MAX] {
            assert!(new_york.lossless(Granularity::Hour, QUARTER_MS, from, to));
            assert!(new_york.lossless(Granularity::Day, HOUR_MS, from, to));
        }
        let lord_howe = Zone::parse("Australia/Lord_Howe").expect("zone");
        assert!(!lord_howe.lossless(Granularity::Hour, HOUR_MS, from, i64::MAX));
    }

    #[test]
    fn unknown_zone_is_an_error_naming_the_trimmed_input() {
        match Zone::parse("  Mars/Olympus ") {
            Err(AnalyticsError::InvalidTimeZone(name)) => assert_eq!(name, "Mars/Olympus"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(Zone::parse("").is_ok());
    }

    #[test]
    fn granularity_auto_switches_at_24_hours() {
        assert_eq!(Granularity::resolve(None, 0, DAY_MS), Granularity::Hour);
        assert_eq!(
            Granularity::resolve(Some("Hour"), 0, DAY_MS + 1),
            Granularity::Day
        );
        assert_eq!(
            Granularity::resolve(Some("hour"), 0, 10 * DAY_MS),
            Granularity::Hour
        );
    }

    #[test]
    fn bucketer_matches_direct_computation() {
        let zone = Zone::parse("Asia/Kathmandu").expect("zone");
        let mut bucketer = Bucketer::new(&zone, Granularity::Hour);
        let start = ms("2025-03-01T00:00:00Z");
        for step in 0..500 {
            let at = start + step * 7 * MINUTE_MS + 13;
            assert_eq!(bucketer.bucket(at), zone.hour_bucket(at));
        }
    }
}
