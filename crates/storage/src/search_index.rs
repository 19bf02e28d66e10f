//! The search index: which events of a finished UTC hour can match a search.
//!
//! A search matches an event when one of its dictionary ids has a matching text
//! (`search.rs` finds those ids among a few hundred texts), when one of its free
//! texts (failure summary, request or trace id kept as text) holds the needle,
//! or, for a needle of hex digits, when its hex request id, trace id or hash
//! does. For every hour that is over, `usage_search_h` keeps the events of each
//! searched dictionary id, and the events that have each kind of free text with
//! the set of bytes those texts hold once lowercased and a filter of their
//! three-byte runs. A search that is not made of hex digits reads only the
//! events that hold one of its ids, or a free text of a kind whose bytes include
//! every byte of the needle and whose filter holds every run of the needle
//! (`candidates`), whatever the size of the hour. The search condition is still
//! checked on each of them, so the index only has to list a superset of the
//! matches; a needle of hex digits reads every event, as before.
//!
//! Reading scattered rows costs SQLite about three times as much per row as
//! stepping through an hour in order, so an hour where more than a third of the
//! events are candidates is read whole (`DENSE`).
//!
//! # Layout of a row
//!
//! Event ids are stored as offsets from the hour's smallest id, in lists. The
//! ten columns that name a credential and a client key change together, so
//! each distinct combination of them gets one list and each of their ids points
//! at the lists of its combinations; every other id gets a list of its own, and
//! equal lists are stored once. A list is the varint gaps between its offsets or
//! a bitmap of them, whichever is smaller. An id held by every event of the hour
//! points at no list (the hour is read whole, as an unindexed one).
//!
//! ```text
//! version, base id, events, lists, { form, byte length, bytes }…,
//! terms, { term gap, list count (0: every event), list index… }…,
//! for each free-text kind: list index + 1 (0: none), then its 32-byte byte set
//!   and its run filter: word count, { 64-bit word }… (version 2 on)
//! ```
//!
//! # The run filter
//!
//! A Bloom filter (two bits per entry) of the three-byte runs of a kind's
//! lowercased texts, leaving out runs made only of lowercase hex digits and
//! dashes: those are what random ids and UUIDs are made of, and a needle of three
//! bytes or more with any other character (the only needles the index serves)
//! has a run that is not left out. A text that holds the needle holds each of its
//! runs, so a run missing from the filter means no text of that kind holds the
//! needle. The filter is sized to about four bits per distinct run (64 bits at
//! least, 32,768 at most): a run the kind does not hold passes for one it does
//! about one time in six, and a needle is left out when any of its runs is.
//! Rows of version 1 have no filter and are judged by their byte sets until the
//! background pass builds them again.
//!
//! # Keeping rows true
//!
//! The batch that adds an event to an hour removes that hour's row in the same
//! transaction (`events.rs`), and the background pass
//! ([`SqliteStore::seal_search_hours`]) reads an hour and writes its row in one
//! write transaction. Events are never removed, so a row lists every event of
//! its hour.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use cpamp_domain::StoreError;
use cpamp_domain::analytics::time::HOUR_MS;
use rusqlite::types::ValueRef;

use crate::fasthash::{FastMap, FastSet};
use crate::rollup::{put, take};
use crate::{SqliteStore, error};

/// An hour whose candidates are more than `1 / DENSE` of its events is read whole.
const DENSE: usize = 3;

/// An hour whose ids span more than this many is read whole (its candidates are
/// gathered in a bitmap of the span: 2 MiB at most).
const MAX_SPAN: u64 = 1 << 24;

/// How long after its end an hour is indexed: events of the hour that arrive
/// later remove its row again, so this only spares the usual late arrivals a
/// second build.
pub(crate) const SEAL_GRACE_MS: i64 = 2 * 60_000;

const VERSION: u64 = 2;

/// The first version whose free-text kinds carry a run filter.
const FILTERED: u64 = 2;

/// The searched dictionary columns that name the credential and the client key
/// of an event (one list per distinct combination).
pub(crate) const SIGNATURE_COLUMNS: [&str; 10] = [
    "executor_type_id",
    "auth_index_id",
    "source_id",
    "source_hash_id",
    "api_key_hash_id",
    "account_snapshot_id",
    "auth_label_snapshot_id",
    "auth_file_snapshot_id",
    "auth_provider_snapshot_id",
    "auth_project_id_snapshot_id",
];

/// The other searched dictionary columns (one list per id).
pub(crate) const OTHER_COLUMNS: [&str; 14] = [
    "model_id",
    "requested_model_id",
    "resolved_model_id",
    "endpoint_id",
    "method_id",
    "path_id",
    "client_ip_id",
    "x_forwarded_for_id",
    "user_agent_id",
    "reasoning_effort_id",
    "service_tier_id",
    "header_quota_plan_type_id",
    "header_error_kind_id",
    "header_error_code_id",
];

/// The free texts a needle that is not hex can match: the failure summary, and
/// the request and trace ids kept as text (hex ones are kept as bytes).
const FREE_TEXT_SQL: &str = "fail_summary, \
    CASE WHEN typeof(request_key) = 'text' THEN request_key END, \
    CASE WHEN typeof(header_trace) = 'text' THEN header_trace END";
const FREE_KINDS: usize = 3;

/// The free-text kinds as bits of a mask, in the order of `FREE_TEXT_SQL`: a
/// failure summary, a request id kept as text, a trace id kept as text.
pub(crate) const FREE_FAILURE: u8 = 1;
pub(crate) const FREE_REQUEST: u8 = 2;
pub(crate) const FREE_TRACE: u8 = 4;
/// Every free-text kind: what a read without an index row must consider.
pub(crate) const ALL_TEXTS: u8 = FREE_FAILURE | FREE_REQUEST | FREE_TRACE;

/// The bytes of lowercased texts, one bit each.
type ByteSet = [u64; 4];

/// Adds the bytes of a lowercased text to `set`.
fn add_bytes(set: &mut ByteSet, lower: &[u8]) {
    for byte in lower {
        set[usize::from(byte >> 6)] |= 1 << (byte & 63);
    }
}

fn holds_bytes(set: &ByteSet, needle: &[u8]) -> bool {
    needle
        .iter()
        .all(|byte| set[usize::from(byte >> 6)] & (1 << (byte & 63)) != 0)
}

/// Most bits of a run filter.
const MAX_FILTER_BITS: usize = 1 << 15;

/// The three-byte runs of `bytes` (lowercased) that the run filter keeps: those
/// with a byte that is neither a lowercase hex digit nor a dash.
fn runs(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .windows(3)
        .filter(|run| {
            run.iter()
                .any(|byte| !matches!(byte, b'0'..=b'9' | b'a'..=b'f' | b'-'))
        })
        .map(|run| u32::from(run[0]) << 16 | u32::from(run[1]) << 8 | u32::from(run[2]))
}

/// The two bits of `run` in a filter of `bits` bits (a power of two).
fn run_bits(run: u32, bits: usize) -> [usize; 2] {
    let hash = u64::from(run).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mask = bits as u64 - 1;
    [
        ((hash >> 49) & mask) as usize,
        ((hash >> 30) & mask) as usize,
    ]
}

/// The run filter of a set of runs, as 64-bit words.
fn run_filter(runs: &FastSet<u32>) -> Vec<u64> {
    let bits = (runs.len().saturating_mul(4))
        .next_power_of_two()
        .clamp(64, MAX_FILTER_BITS);
    let mut words = vec![0_u64; bits / 64];
    for run in runs {
        for bit in run_bits(*run, bits) {
            words[bit / 64] |= 1 << (bit % 64);
        }
    }
    words
}

/// Whether a run filter (its words, little-endian) may hold every run of
/// `needle` it would keep.
fn filter_holds(words: &[u8], needle: &[u8]) -> bool {
    let bits = words.len() * 8;
    runs(needle).all(|run| {
        run_bits(run, bits)
            .iter()
            .all(|bit| words[bit / 8] & (1 << (bit % 8)) != 0)
    })
}

/// What a search asks the index.
#[derive(Debug, Clone)]
pub(crate) struct IndexAsk {
    /// The matching dictionary ids, ascending.
    pub terms: Vec<i64>,
    /// The needle's bytes, lowercased, when they decide which free texts can
    /// match (an ASCII needle); `None` reads every free text.
    pub needle: Option<Vec<u8>>,
}

const GAPS: u8 = 0;
const BITMAP: u8 = 1;

/// One hour's index row.
#[derive(Debug)]
pub(crate) struct Built {
    pub events: i64,
    pub terms: Vec<u8>,
}

/// The index row of the events in `[hour, hour + 1 h)`, read in `connection`'s
/// snapshot; `None` for an hour without events.
pub(crate) fn build(
    connection: &rusqlite::Connection,
    hour: i64,
) -> rusqlite::Result<Option<Built>> {
    let sql = format!(
        "SELECT id, {}, {}, {FREE_TEXT_SQL} FROM usage_events \
         WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2",
        SIGNATURE_COLUMNS.join(", "),
        OTHER_COLUMNS.join(", "),
    );
    const COLUMNS: usize = SIGNATURE_COLUMNS.len() + OTHER_COLUMNS.len();
    let range = (hour, hour.saturating_add(HOUR_MS));
    // Offsets from the hour's smallest id, so lists hold 4 bytes per entry.
    let base: Option<i64> = connection
        .prepare_cached(
            "SELECT min(id) FROM usage_events WHERE timestamp_ms >= ?1 AND timestamp_ms < ?2",
        )?
        .query_row(range, |row| row.get(0))?;
    let Some(base) = base else {
        return Ok(None);
    };
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(range)?;
    // Lists of offsets, filled in time order and sorted at the end: nothing is
    // kept per event but its place in the lists.
    let mut signatures: FastMap<[i64; SIGNATURE_COLUMNS.len()], usize> = FastMap::default();
    let mut lists: Vec<Vec<u32>> = Vec::new();
    let mut refs: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    let mut plain: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    let mut free: [(Vec<u32>, ByteSet, FastSet<u32>); FREE_KINDS] = Default::default();
    let mut count = 0_usize;
    while let Some(row) = rows.next()? {
        let int = |index: usize| match row.get_ref(index) {
            Ok(ValueRef::Integer(value)) => value,
            _ => 0,
        };
        // An hour whose ids span more than offsets hold is left unindexed (read
        // whole).
        let Ok(offset) = u32::try_from(int(0) - base) else {
            return Ok(None);
        };
        count += 1;
        let signature: [i64; SIGNATURE_COLUMNS.len()] =
            std::array::from_fn(|column| int(1 + column));
        let list = match signatures.get(&signature) {
            Some(list) => *list,
            None => {
                let list = lists.len();
                lists.push(Vec::new());
                signatures.insert(signature, list);
                for term in signature.iter().filter(|term| **term > 0) {
                    let entry = refs.entry(*term).or_default();
                    if entry.last() != Some(&list) {
                        entry.push(list);
                    }
                }
                list
            }
        };
        lists[list].push(offset);
        for (kind, (offsets, bytes, kept)) in free.iter_mut().enumerate() {
            if let Ok(ValueRef::Text(text)) = row.get_ref(1 + COLUMNS + kind) {
                offsets.push(offset);
                let text = String::from_utf8_lossy(text);
                let lower = if text.is_ascii() {
                    text.to_ascii_lowercase()
                } else {
                    text.to_lowercase()
                };
                add_bytes(bytes, lower.as_bytes());
                kept.extend(runs(lower.as_bytes()));
            }
        }
        let others = (SIGNATURE_COLUMNS.len()..COLUMNS).map(|column| int(1 + column));
        for term in others.filter(|term| *term > 0) {
            let entry = plain.entry(term).or_default();
            // The same id in two columns of one event (model and requested model).
            if entry.last() != Some(&offset) {
                entry.push(offset);
            }
        }
    }
    drop(rows);
    if count == 0 {
        return Ok(None);
    }
    // Every list is encoded as soon as it is complete; equal encodings are
    // stored once.
    let mut encoded: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut shared: FastMap<(u8, Vec<u8>), usize> = FastMap::default();
    let mut add = |mut offsets: Vec<u32>, share: bool| -> usize {
        offsets.sort_unstable();
        offsets.dedup();
        let mut bytes = Vec::new();
        let form = encode_list(&offsets, &mut bytes);
        if !share {
            encoded.push((form, bytes));
            return encoded.len() - 1;
        }
        *shared.entry((form, bytes)).or_insert_with_key(|key| {
            encoded.push(key.clone());
            encoded.len() - 1
        })
    };
    // A credential id held by every event needs no list.
    for lists_of_term in refs.values_mut() {
        let held: usize = lists_of_term.iter().map(|list| lists[*list].len()).sum();
        if held == count {
            lists_of_term.clear();
        }
    }
    for list in lists {
        add(list, false);
    }
    for (term, offsets) in plain {
        let lists_of_term = if offsets.len() == count {
            Vec::new()
        } else {
            vec![add(offsets, true)]
        };
        refs.insert(term, lists_of_term);
    }
    let mut free_lists: Vec<Option<(usize, ByteSet, Vec<u64>)>> = Vec::with_capacity(FREE_KINDS);
    for (offsets, bytes, kept) in free {
        free_lists
            .push((!offsets.is_empty()).then(|| (add(offsets, false), bytes, run_filter(&kept))));
    }
    let mut out = Vec::with_capacity(
        encoded
            .iter()
            .map(|(_, bytes)| bytes.len() + 4)
            .sum::<usize>()
            + 64,
    );
    put(&mut out, VERSION);
    put(&mut out, u64::try_from(base).unwrap_or(0));
    put(&mut out, count as u64);
    put(&mut out, encoded.len() as u64);
    for (form, bytes) in &encoded {
        out.push(*form);
        put(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    put(&mut out, refs.len() as u64);
    let mut previous = 0_i64;
    for (term, lists_of_term) in &refs {
        put(&mut out, u64::try_from(term - previous).unwrap_or(0));
        previous = *term;
        put(&mut out, lists_of_term.len() as u64);
        for list in lists_of_term {
            put(&mut out, *list as u64);
        }
    }
    for kind in free_lists {
        match kind {
            None => put(&mut out, 0),
            Some((list, bytes, filter)) => {
                put(&mut out, list as u64 + 1);
                for word in bytes {
                    out.extend_from_slice(&word.to_le_bytes());
                }
                put(&mut out, filter.len() as u64);
                for word in filter {
                    out.extend_from_slice(&word.to_le_bytes());
                }
            }
        }
    }
    Ok(Some(Built {
        events: count as i64,
        terms: out,
    }))
}

/// Writes `list` (sorted, distinct offsets) into `out` as gaps or as a bitmap,
/// whichever is smaller, and returns its form.
fn encode_list(list: &[u32], out: &mut Vec<u8>) -> u8 {
    out.clear();
    let mut previous = 0;
    for (position, offset) in list.iter().enumerate() {
        let gap = if position == 0 {
            *offset
        } else {
            offset - previous - 1
        };
        put(out, u64::from(gap));
        previous = *offset;
    }
    let last = list.last().copied().unwrap_or(0);
    let bitmap_len = usize::try_from(last / 8 + 1).unwrap_or(usize::MAX);
    if bitmap_len >= out.len() {
        return GAPS;
    }
    out.clear();
    out.resize(bitmap_len, 0);
    for offset in list {
        out[(offset / 8) as usize] |= 1 << (offset % 8);
    }
    BITMAP
}

/// The events of an indexed hour that a search can match.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Candidates {
    /// Every event of the hour may match: read it whole. Only the free-text kinds
    /// in `texts` (a mask of `FREE_FAILURE`, …) can hold the needle in this hour,
    /// so the read's condition need not look at the others.
    All { texts: u8 },
    /// Only these events may match (ascending ids; maybe none).
    Ids(Vec<i64>),
}

/// The candidates of an index row for `ask`; `None` for a row this build does
/// not read (another version, or damaged), which is then read whole.
pub(crate) fn candidates(row: &[u8], ask: &IndexAsk) -> Option<Candidates> {
    let Union {
        texts,
        count,
        members,
    } = union(row, ask)?;
    let (base, bits) = match members {
        Members::Offsets { base, bits } => (base, bits),
        Members::Every | Members::Wide => return Some(Candidates::All { texts }),
    };
    let found: usize = bits.iter().map(|word| word.count_ones() as usize).sum();
    if found.saturating_mul(DENSE) > count {
        return Some(Candidates::All { texts });
    }
    let mut ids = Vec::with_capacity(found);
    for (index, word) in bits.iter().enumerate() {
        let mut word = *word;
        while word != 0 {
            let offset = index as i64 * 64 + i64::from(word.trailing_zeros());
            ids.push(base.checked_add(offset)?);
            word &= word - 1;
        }
    }
    Some(Candidates::Ids(ids))
}

/// How many events of an indexed hour hold one of the ids `ask` names, when no
/// free text of the hour can hold its needle (those events are then the search's
/// matches, or a superset of them, see `SearchSql::of`) and each of them also
/// holds one of the ids `keyed` names (a subset of `ask`'s: the ids a rollup is
/// keyed by). `None` otherwise: when a free text can hold the needle, when some
/// event holds only ids no rollup is keyed by (a user agent, a path), or for a
/// row this build does not read.
pub(crate) fn matched_count(row: &[u8], ask: &IndexAsk, keyed: &IndexAsk) -> Option<u64> {
    let all = union(row, ask)?;
    if all.texts != 0 {
        return None;
    }
    let count = all.size()?;
    (union(row, keyed)?.size()? == count).then_some(count)
}

/// The events of an index row that hold an asked id or a free text that can hold
/// the needle.
struct Union {
    /// The free-text kinds that can hold the needle.
    texts: u8,
    /// The events of the hour.
    count: usize,
    members: Members,
}

impl Union {
    /// How many events the union holds (`None` for a wide one).
    fn size(&self) -> Option<u64> {
        match &self.members {
            Members::Every => u64::try_from(self.count).ok(),
            Members::Offsets { bits, .. } => {
                Some(bits.iter().map(|word| u64::from(word.count_ones())).sum())
            }
            Members::Wide => None,
        }
    }
}

enum Members {
    /// An asked id every event holds.
    Every,
    /// The members as a bitmap of offsets from `base`.
    Offsets { base: i64, bits: Vec<u64> },
    /// A member too far from the hour's smallest id for a bitmap.
    Wide,
}

/// The [`Union`] of an index row for `ask`; `None` for a row this build does not
/// read.
fn union(row: &[u8], ask: &IndexAsk) -> Option<Union> {
    let terms = ask.terms.as_slice();
    let mut at = 0;
    let version = take(row, &mut at)?;
    if version != VERSION && version != 1 {
        return None;
    }
    let base = i64::try_from(take(row, &mut at)?).ok()?;
    let count = usize::try_from(take(row, &mut at)?).ok()?;
    let list_count = usize::try_from(take(row, &mut at)?).ok()?;
    let mut lists: Vec<(u8, usize, usize)> = Vec::with_capacity(list_count.min(1 << 16));
    for _ in 0..list_count {
        let form = *row.get(at)?;
        at += 1;
        let len = usize::try_from(take(row, &mut at)?).ok()?;
        let end = at.checked_add(len).filter(|end| *end <= row.len())?;
        lists.push((form, at, end));
        at = end;
    }
    let term_count = take(row, &mut at)?;
    let mut wanted = vec![false; lists.len()];
    // An asked id that every event holds: the hour is read whole.
    let mut every = false;
    let mut next = terms.iter().peekable();
    let mut term = 0_i64;
    for _ in 0..term_count {
        term = term.checked_add(i64::try_from(take(row, &mut at)?).ok()?)?;
        let held = usize::try_from(take(row, &mut at)?).ok()?;
        while next.next_if(|wanted| **wanted < term).is_some() {}
        let asked = next.peek().is_some_and(|wanted| **wanted == term);
        every |= asked && held == 0;
        for _ in 0..held {
            let list = usize::try_from(take(row, &mut at)?).ok()?;
            if asked {
                *wanted.get_mut(list)? = true;
            }
        }
    }
    let mut texts = 0_u8;
    for kind in 0..FREE_KINDS {
        let list = take(row, &mut at)?;
        if list == 0 {
            continue;
        }
        let words = row.get(at..at.checked_add(32)?)?;
        at += 32;
        let bytes: ByteSet = std::array::from_fn(|word| {
            u64::from_le_bytes(words[word * 8..word * 8 + 8].try_into().unwrap_or_default())
        });
        let filter = if version >= FILTERED {
            let count = usize::try_from(take(row, &mut at)?).ok()?;
            let len = count
                .checked_mul(8)
                .filter(|len| *len <= MAX_FILTER_BITS / 8)?;
            if !len.is_power_of_two() {
                return None;
            }
            let words = row.get(at..at.checked_add(len)?)?;
            at += len;
            Some(words)
        } else {
            None
        };
        if ask.needle.as_ref().is_none_or(|needle| {
            holds_bytes(&bytes, needle) && filter.is_none_or(|words| filter_holds(words, needle))
        }) {
            *wanted.get_mut(usize::try_from(list - 1).ok()?)? = true;
            texts |= 1 << kind;
        }
    }
    if every {
        return Some(Union {
            texts,
            count,
            members: Members::Every,
        });
    }
    // The union as a bitmap of offsets: no sort, and its count decides at once
    // whether the hour is dense.
    let mut bits: Vec<u64> = Vec::new();
    let mut set = |offset: u64| -> bool {
        if offset >= MAX_SPAN {
            return false;
        }
        let word = (offset / 64) as usize;
        if word >= bits.len() {
            bits.resize(word + 1, 0);
        }
        bits[word] |= 1 << (offset % 64);
        true
    };
    for ((form, start, end), _) in lists.iter().zip(&wanted).filter(|(_, wanted)| **wanted) {
        let bytes = &row[*start..*end];
        match *form {
            GAPS => {
                let mut at = 0;
                let mut offset = 0_u64;
                let mut first = true;
                while at < bytes.len() {
                    let gap = take(bytes, &mut at)?;
                    offset = if first {
                        gap
                    } else {
                        offset.checked_add(gap)?.checked_add(1)?
                    };
                    first = false;
                    if !set(offset) {
                        return Some(Union {
                            texts,
                            count,
                            members: Members::Wide,
                        });
                    }
                }
            }
            BITMAP => {
                for (index, byte) in bytes.iter().enumerate().filter(|(_, byte)| **byte != 0) {
                    let mut byte_bits = *byte;
                    while byte_bits != 0 {
                        let bit = byte_bits.trailing_zeros();
                        if !set(index as u64 * 8 + u64::from(bit)) {
                            return Some(Union {
                                texts,
                                count,
                                members: Members::Wide,
                            });
                        }
                        byte_bits &= byte_bits - 1;
                    }
                }
            }
            _ => return None,
        }
    }
    Some(Union {
        texts,
        count,
        members: Members::Offsets { base, bits },
    })
}

/// A part of a searched range: read every event of it, or only some.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Every event in `[from, to)`, of which only free texts of the kinds in the
    /// mask can hold the needle (`ALL_TEXTS` where no index row tells).
    Range(i64, i64, u8),
    /// The listed events, of those in `[from, to)` (ascending ids).
    Ids(i64, i64, Vec<i64>),
}

impl Piece {
    /// The piece's range, the free-text kinds that can hold the needle in it, and
    /// its ids as one `rarray` value (`None` for a whole range). A listed piece
    /// names every kind: its free-text candidates are listed, not its kinds.
    pub(crate) fn bounds(&self) -> (i64, i64, u8, Option<rusqlite::vtab::array::Array>) {
        match self {
            Piece::Range(start, end, texts) => (*start, *end, *texts, None),
            Piece::Ids(start, end, ids) => (
                *start,
                *end,
                ALL_TEXTS,
                Some(std::rc::Rc::new(
                    ids.iter()
                        .copied()
                        .map(rusqlite::types::Value::from)
                        .collect(),
                )),
            ),
        }
    }
}

/// The parts of `[from, to)` a search that asks `ask` reads, in time order, from
/// the index rows in `connection`'s snapshot: indexed hours become their
/// candidates (none for an hour without any), the rest is read whole.
pub(crate) fn plan(
    connection: &rusqlite::Connection,
    (from, to): (i64, i64),
    ask: &IndexAsk,
) -> rusqlite::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    if from >= to {
        return Ok(pieces);
    }
    let mut statement = connection.prepare_cached(
        "SELECT bucket_ms, terms FROM usage_search_h \
         WHERE bucket_ms >= ?1 AND bucket_ms < ?2 ORDER BY bucket_ms",
    )?;
    let first_hour = from.div_euclid(HOUR_MS).saturating_mul(HOUR_MS);
    let mut rows = statement.query((first_hour, to))?;
    let mut cursor = from;
    let whole = |pieces: &mut Vec<Piece>, start: i64, end: i64, texts: u8| {
        if start >= end {
            return;
        }
        match pieces.last_mut() {
            Some(Piece::Range(_, last, kinds)) if *last == start && *kinds == texts => *last = end,
            _ => pieces.push(Piece::Range(start, end, texts)),
        }
    };
    while let Some(row) = rows.next()? {
        let hour: i64 = row.get(0)?;
        let ValueRef::Blob(blob) = row.get_ref(1)? else {
            continue;
        };
        let (start, end) = (hour.max(from), hour.saturating_add(HOUR_MS).min(to));
        match candidates(blob, ask) {
            Some(Candidates::Ids(ids)) => {
                whole(&mut pieces, cursor, start, ALL_TEXTS);
                if !ids.is_empty() {
                    pieces.push(Piece::Ids(start, end, ids));
                }
                cursor = end;
            }
            Some(Candidates::All { texts }) => {
                whole(&mut pieces, cursor, start, ALL_TEXTS);
                whole(&mut pieces, start, end, texts);
                cursor = end;
            }
            None => {}
        }
    }
    whole(&mut pieces, cursor, to, ALL_TEXTS);
    Ok(pieces)
}

impl SqliteStore {
    /// Builds the search index of every hour that ended at least two minutes
    /// (`SEAL_GRACE_MS`) before `now_ms` and holds events but no index row (the
    /// newest first), and returns how many rows were written. Runs with the WAL
    /// maintenance. Each hour is read and written in one transaction on the batch
    /// connection, under the writer lease like a batch: no event can arrive
    /// between the read and the write, and the pass opens no connection of its
    /// own. Batches wait for one hour's build at most (720 hours of 1,000,000
    /// events took 2 s in all).
    pub async fn seal_search_hours(&self, now_ms: i64) -> Result<usize, StoreError> {
        let before = now_ms
            .saturating_sub(SEAL_GRACE_MS)
            .div_euclid(HOUR_MS)
            .saturating_mul(HOUR_MS);
        // Only the hours after the last pass's mark, and those batches added to
        // since, are looked at: the pass then reads what changed, not the whole
        // history, while it holds the writer. The mark moves on here, under the
        // writer, so a batch that adds to an hour after this look lowers it again.
        let (floor, pending) = self
            .with_batch_writer(
                ("begin indexing", "find hours to index"),
                move |store, connection| {
                    let floor = store
                        .inner
                        .search_indexed_before
                        .swap(before, Ordering::SeqCst)
                        .min(before);
                    match pending_hours(connection, floor, before) {
                        Ok(pending) => Ok((floor, pending)),
                        Err(error) => {
                            store.search_index_lowered(floor);
                            Err(error::sqlite("find hours to index")(error))
                        }
                    }
                },
            )
            .await?;
        let mut written = 0;
        for hour in pending.into_iter().rev() {
            let sealed = self
                .with_batch_writer(("begin indexing", "index an hour"), move |_, connection| {
                    seal_hour(connection, hour).map_err(error::sqlite("index an hour"))
                })
                .await;
            match sealed {
                Ok(sealed) => written += usize::from(sealed),
                Err(error) => {
                    // The hours not indexed yet are looked at again next time.
                    self.search_index_lowered(floor);
                    return Err(error);
                }
            }
        }
        Ok(written)
    }

    /// Lowers the mark below which every hour is indexed to `hour` (an hour that
    /// gained events, or one a failed pass left), so the next pass looks at it.
    pub(crate) fn search_index_lowered(&self, hour: i64) {
        self.inner.search_indexed_before.fetch_min(
            hour.div_euclid(HOUR_MS).saturating_mul(HOUR_MS),
            Ordering::SeqCst,
        );
    }
}

/// Builds and writes `hour`'s index row in one transaction, in place of a row of
/// an older version; true when written.
fn seal_hour(connection: &mut rusqlite::Connection, hour: i64) -> rusqlite::Result<bool> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let written = match build(&transaction, hour)? {
        Some(built) => {
            transaction
                .prepare_cached(
                    "INSERT INTO usage_search_h (bucket_ms, events, terms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (bucket_ms) DO UPDATE SET events = excluded.events, \
                 terms = excluded.terms",
                )?
                .execute((hour, built.events, built.terms))?
                > 0
        }
        None => false,
    };
    transaction.commit()?;
    Ok(written)
}

/// The hours in `[from, before)` that hold events but no index row of this
/// version (older rows are built again), ascending: one index seek per hour with
/// events.
fn pending_hours(
    reader: &rusqlite::Connection,
    from: i64,
    before: i64,
) -> rusqlite::Result<Vec<i64>> {
    let transaction = reader.unchecked_transaction()?;
    let indexed: HashSet<i64> = {
        // A version below 128 is the row's first byte.
        let mut statement = transaction.prepare_cached(
            "SELECT bucket_ms FROM usage_search_h WHERE bucket_ms >= ?2 AND bucket_ms < ?3 \
             AND substr(terms, 1, 1) = ?1",
        )?;
        let rows = statement.query_map(
            rusqlite::params![[VERSION as u8].as_slice(), from, before],
            |row| row.get(0),
        )?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut pending = Vec::new();
    {
        let mut next = transaction.prepare_cached(
            "SELECT timestamp_ms FROM usage_events WHERE timestamp_ms >= ?1 \
             ORDER BY timestamp_ms LIMIT 1",
        )?;
        let mut at = from;
        while let Some(time) = next
            .query_row([at], |row| row.get::<_, i64>(0))
            .map(Some)
            .or_else(|error| match error {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                error => Err(error),
            })?
        {
            let hour = time.div_euclid(HOUR_MS).saturating_mul(HOUR_MS);
            if hour >= before {
                break;
            }
            if !indexed.contains(&hour) {
                pending.push(hour);
            }
            at = hour.saturating_add(HOUR_MS);
        }
    }
    transaction.commit()?;
    Ok(pending)
}

/// Removes the index rows of the hours `times` fall into: their hours gain
/// events (called in the transaction that inserts them).
pub(crate) fn unseal(
    connection: &rusqlite::Connection,
    times: impl Iterator<Item = i64>,
) -> rusqlite::Result<()> {
    let mut hours: Vec<i64> = times
        .map(|time| time.div_euclid(HOUR_MS).saturating_mul(HOUR_MS))
        .collect();
    hours.sort_unstable();
    hours.dedup();
    let mut statement =
        connection.prepare_cached("DELETE FROM usage_search_h WHERE bucket_ms = ?1")?;
    for hour in hours {
        statement.execute([hour])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index covers exactly the columns the search matches ids in.
    #[test]
    fn the_indexed_columns_are_the_searched_ones() {
        let mut indexed: Vec<&str> = SIGNATURE_COLUMNS
            .iter()
            .chain(&OTHER_COLUMNS)
            .copied()
            .collect();
        let mut searched: Vec<&str> = crate::search::DICTIONARY_COLUMNS
            .iter()
            .map(|(column, _)| *column)
            .collect();
        indexed.sort_unstable();
        searched.sort_unstable();
        assert_eq!(indexed, searched);
    }

    #[test]
    fn lists_round_trip_in_both_forms() {
        let mut scratch = Vec::new();
        let sparse = vec![3_u32, 700, 70_000];
        assert_eq!(encode_list(&sparse, &mut scratch), GAPS);
        let dense: Vec<u32> = (0..400).filter(|value| value % 3 != 0).collect();
        assert_eq!(encode_list(&dense, &mut scratch), BITMAP);
        // Past the widest span gathered, or dense: the hour is read whole.
        let wide = vec![5_u32, MAX_SPAN as u32 + 1];
        let half: Vec<u32> = (0..100_000).step_by(2).collect();
        let cases = [(sparse, false), (dense, false), (wide, true), (half, true)];
        // Rows of version 1 (no run filters) read the same.
        for (version, (list, whole)) in [1, VERSION]
            .into_iter()
            .flat_map(|version| cases.iter().map(move |case| (version, case.clone())))
        {
            let mut row = Vec::new();
            put(&mut row, version);
            put(&mut row, 1000);
            put(&mut row, 100_000);
            put(&mut row, 1);
            let form = encode_list(&list, &mut scratch);
            row.push(form);
            put(&mut row, scratch.len() as u64);
            row.extend_from_slice(&scratch);
            put(&mut row, 1);
            put(&mut row, 42);
            put(&mut row, 1);
            put(&mut row, 0);
            // No free texts.
            row.extend_from_slice(&[0, 0, 0]);
            let ask = |terms: &[i64]| IndexAsk {
                terms: terms.to_vec(),
                needle: None,
            };
            let expected: Vec<i64> = list.iter().map(|offset| 1000 + *offset as i64).collect();
            let asked = candidates(&row, &ask(&[42]));
            if whole {
                assert_eq!(asked, Some(Candidates::All { texts: 0 }));
                continue;
            }
            assert_eq!(asked, Some(Candidates::Ids(expected)));
            assert_eq!(
                candidates(&row, &ask(&[41, 43])),
                Some(Candidates::Ids(Vec::new()))
            );
        }
    }

    /// The start of a UTC hour the store tests put events in.
    const HOUR: i64 = 1_767_222_000_000;

    /// A store in a fresh directory (kept alive by the first value).
    async fn empty_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(crate::Options::new(dir.path().join("usage.sqlite")))
            .await
            .expect("open store");
        (dir, store)
    }

    /// Only hours that ended two minutes ago get a row, each once, with its
    /// event count.
    #[tokio::test]
    async fn finished_hours_are_indexed_once() {
        let (dir, store) = empty_store().await;
        let hour = HOUR;
        for (id, at) in [(1, hour + 5), (2, hour + 60_000), (3, hour + HOUR_MS + 7)] {
            sqlx::query(
                "INSERT INTO usage_events (id, event_hash, timestamp_ms, model_id, created_at_delta) \
                 VALUES (?1, randomblob(32), ?2, 1, 0)",
            )
            .bind(id)
            .bind(at)
            .execute(store.writer())
            .await
            .expect("event");
        }
        let rows = |store: SqliteStore| async move {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT bucket_ms, events FROM usage_search_h ORDER BY bucket_ms",
            )
            .fetch_all(store.writer())
            .await
            .expect("rows")
        };
        // The second hour has not been over for two minutes yet.
        let now = hour + 2 * HOUR_MS + SEAL_GRACE_MS - 1;
        assert_eq!(store.seal_search_hours(now).await.expect("seal"), 1);
        assert_eq!(rows(store.clone()).await, vec![(hour, 2)]);
        assert_eq!(store.seal_search_hours(now).await.expect("seal"), 0);
        assert_eq!(store.seal_search_hours(now + 1).await.expect("seal"), 1);
        assert_eq!(
            rows(store.clone()).await,
            vec![(hour, 2), (hour + HOUR_MS, 1)]
        );
        // A pass looks only at hours after the last one's mark and those batches
        // added to, so a row of an older version (as a new release finds them) is
        // built again, in place, by the first pass after the store opens.
        sqlx::query(
            "UPDATE usage_search_h SET terms = x'01' || substr(terms, 2) WHERE bucket_ms = ?",
        )
        .bind(hour)
        .execute(store.writer())
        .await
        .expect("age a row");
        assert_eq!(store.seal_search_hours(now + 1).await.expect("seal"), 0);
        store.close().await;
        let store = SqliteStore::open(crate::Options::new(dir.path().join("usage.sqlite")))
            .await
            .expect("open again");
        assert_eq!(store.seal_search_hours(now + 1).await.expect("seal"), 1);
        let versions: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT substr(terms, 1, 1) FROM usage_search_h ORDER BY bucket_ms")
                .fetch_all(store.writer())
                .await
                .expect("versions");
        assert_eq!(versions, vec![vec![VERSION as u8]; 2]);
        assert_eq!(store.seal_search_hours(now + 1).await.expect("seal"), 0);
    }

    /// A free text whose kind holds every byte of the needle, but not the needle,
    /// makes no candidate; one that holds it (once lowercased) does.
    #[tokio::test]
    async fn run_filters_leave_out_texts_without_the_needle() {
        let (_dir, store) = empty_store().await;
        let hour = HOUR;
        let summaries = [
            Some("plain overload"),
            Some("upstream \u{212A}elvin timeout"),
        ];
        for id in 1..=10_i64 {
            let summary = summaries
                .get(usize::try_from(id - 1).expect("index"))
                .copied()
                .flatten();
            sqlx::query(
                "INSERT INTO usage_events \
                 (id, event_hash, timestamp_ms, model_id, created_at_delta, failed, fail_summary) \
                 VALUES (?1, randomblob(32), ?2, 1, 0, ?3, ?4)",
            )
            .bind(id)
            .bind(hour + id * 1_000)
            .bind(summary.is_some())
            .bind(summary)
            .execute(store.writer())
            .await
            .expect("event");
        }
        assert_eq!(
            store
                .seal_search_hours(hour + 2 * HOUR_MS)
                .await
                .expect("seal"),
            1
        );
        let row: Vec<u8> = sqlx::query_scalar("SELECT terms FROM usage_search_h")
            .fetch_one(store.writer())
            .await
            .expect("row");
        let ask = |needle: &str| IndexAsk {
            terms: Vec::new(),
            needle: Some(needle.as_bytes().to_vec()),
        };
        let both = Some(Candidates::Ids(vec![1, 2]));
        assert_eq!(candidates(&row, &ask("overload")), both);
        assert_eq!(candidates(&row, &ask("kelvin t")), both);
        // Every byte of these is in the summaries, but neither is.
        for absent in ["load plain", "time kelvin"] {
            assert_eq!(
                candidates(&row, &ask(absent)),
                Some(Candidates::Ids(Vec::new())),
                "{absent}"
            );
        }
        // Shorter than a run: the byte set alone decides.
        assert_eq!(candidates(&row, &ask("np")), both);
        // Every event holds model 1: the hour is read whole, and only failure
        // summaries can hold a needle that one of them holds.
        let with_model = |needle: &str| IndexAsk {
            terms: vec![1],
            needle: Some(needle.as_bytes().to_vec()),
        };
        assert_eq!(
            candidates(&row, &with_model("overload")),
            Some(Candidates::All {
                texts: FREE_FAILURE
            })
        );
        assert_eq!(
            candidates(&row, &with_model("time kelvin")),
            Some(Candidates::All { texts: 0 })
        );
        // A needle that tells nothing (not ASCII) leaves every present kind.
        assert_eq!(
            candidates(
                &row,
                &IndexAsk {
                    terms: vec![1],
                    needle: None
                }
            ),
            Some(Candidates::All {
                texts: FREE_FAILURE
            })
        );
        // A row of version 1 has no filter: its byte set alone decides.
        let mut old = Vec::new();
        put(&mut old, 1);
        put(&mut old, 1000);
        put(&mut old, 100);
        put(&mut old, 1);
        let mut list = Vec::new();
        old.push(encode_list(&[3], &mut list));
        put(&mut old, list.len() as u64);
        old.extend_from_slice(&list);
        put(&mut old, 0);
        put(&mut old, 1);
        let mut set = ByteSet::default();
        add_bytes(&mut set, b"plain overload");
        for word in set {
            old.extend_from_slice(&word.to_le_bytes());
        }
        old.extend_from_slice(&[0, 0]);
        assert_eq!(
            candidates(&old, &ask("load plain")),
            Some(Candidates::Ids(vec![1003]))
        );
        assert_eq!(
            candidates(&old, &ask("overloadz")),
            Some(Candidates::Ids(Vec::new()))
        );
    }

    #[test]
    fn a_damaged_row_is_read_whole() {
        let ask = IndexAsk {
            terms: vec![1],
            needle: None,
        };
        assert_eq!(candidates(&[], &ask), None);
        assert_eq!(candidates(&[9, 0, 0, 0, 0], &ask), None);
        assert_eq!(candidates(&[1, 5, 10, 1, 0, 200], &ask), None);
    }
}
