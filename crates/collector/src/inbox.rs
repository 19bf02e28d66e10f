//! The durable inbox: every batch taken from CPA is appended to a file and synced to disk
//! before anything else happens to it, so a hard kill (`kill -9`, an OOM kill, a power
//! cut) loses nothing that was received. The file is replayed when the collector starts
//! and trimmed once the store committed what it holds.
//!
//! The file is a sequence of records, each `kind (1 byte) | body length (u32 LE) |
//! CRC-32 of the body (u32 LE) | body`:
//! - `B` a batch: `seq (u64) | received at ms (i64) | origin (u16 length + UTF-8) | item
//!   count (u32) | items`, each item `0 | length (u32) | bytes` for a payload or `1 |
//!   length | raw | length | reason` for an item that cannot be a payload. Synced.
//! - `C` committed: `seq (u64)`; every batch up to `seq` is stored. Not synced (a lost
//!   marker only replays a stored batch, which the store's dedupe by event hash skips).
//! - `R` a subscription began, `Q` a pop began: `at ms (i64) | origin (UTF-8, may be
//!   absent)`; `I` the read ended: `at ms`. A file whose last `R` or `Q` has no `I` after
//!   it belongs to a process that was killed while reading from CPA, which the caller
//!   records as a gap unless the whole response was recovered (below).
//! - `H` response bytes: `format (1 byte: 0 the HTTP queue's JSON array, 1 a RESP pop
//!   reply, 2 the frames of a subscription) | bytes`, appended as they come off the
//!   socket, before anything parses them. A `B` written later in the same read supersedes
//!   a pop's bytes; `K` supersedes a subscription's first messages.
//! - `K` the subscription's messages held in batches: `count (u64)`, the number of
//!   messages since its `R` that `B` records carry.
//!
//! At start, the bytes of a read that never ended are parsed as far as they go and every
//! complete item not yet in a batch becomes one; if they hold a pop's whole response,
//! nothing of that read was lost and no gap is reported (a subscription may always have
//! had messages in flight).
//!
//! The marks and response bytes are written, not synced: a killed process leaves them in
//! the page cache, so they survive `kill -9` and an OOM kill, not a power cut.
//!
//! A torn or corrupt tail (a write cut short) ends the replay there and is cut off.
//! Raw payloads can hold secrets, so the file is created with mode 0600 and emptied as
//! soon as everything in it is stored.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::source::RawItem;

const HEADER: usize = 9;
const KIND_BATCH: u8 = b'B';
const KIND_COMMITTED: u8 = b'C';
const KIND_READ_BEGAN: u8 = b'R';
const KIND_POP_BEGAN: u8 = b'Q';
const KIND_READ_ENDED: u8 = b'I';
const KIND_RESPONSE: u8 = b'H';
const KIND_COVERED: u8 = b'K';
/// A file larger than this with something stored in it is rewritten with only what is
/// still held.
const COMPACT_AT: u64 = 16 * 1024 * 1024;
/// The buffer held batches are copied through when the file is compacted.
const COPY_BUFFER: usize = 64 * 1024;

/// Where a held batch sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub offset: u64,
    pub len: u64,
}

/// How the bytes of a response are framed (the first byte of an `H` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseFormat {
    /// The HTTP usage queue's JSON array.
    HttpQueue = 0,
    /// A RESP reply to `LPOP`/`RPOP` with a count.
    RespPop = 1,
    /// The frames arriving on a subscription.
    Subscription = 2,
}

impl ResponseFormat {
    fn from_byte(byte: u8) -> Option<ResponseFormat> {
        match byte {
            0 => Some(ResponseFormat::HttpQueue),
            1 => Some(ResponseFormat::RespPop),
            2 => Some(ResponseFormat::Subscription),
            _ => None,
        }
    }

    /// Every complete item in the first bytes of a response, and whether the response is
    /// all there.
    pub(crate) fn recover(self, bytes: &[u8]) -> (Vec<RawItem>, bool) {
        match self {
            ResponseFormat::HttpQueue => crate::http::recover_queue_body(bytes),
            ResponseFormat::RespPop => crate::resp::recover_pop_reply(bytes),
            ResponseFormat::Subscription => (crate::resp::subscription_messages(bytes).0, false),
        }
    }
}

/// What kind of read a mark opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadKind {
    /// One pop: a request and its response.
    Pop,
    /// A subscription, open for as long as it lasts.
    Subscription,
}

/// The read in progress and what it wrote since its mark.
#[derive(Debug)]
struct OpenRead {
    /// Where its mark starts.
    offset: u64,
    at_ms: i64,
    kind: ReadKind,
    origin: String,
    /// Response bytes written since the mark and not yet superseded by a batch.
    response: Vec<u8>,
    format: Option<ResponseFormat>,
    /// A subscription's frames whose messages are not yet in a batch.
    stream: SubscriptionStream,
    /// Nothing but the mark and response bytes follows `offset`, so a read that brought
    /// nothing can be cut off again.
    clean: bool,
}

/// The frames of a subscription from its first message not yet in a batch on.
#[derive(Debug, Default)]
struct SubscriptionStream {
    bytes: Vec<u8>,
    /// Messages since the subscription began that precede `bytes`.
    base: u64,
}

impl SubscriptionStream {
    /// Drops the frames up to the `count`th message since the subscription began.
    fn covered(&mut self, count: u64) {
        let Some(drop) = count.checked_sub(self.base).filter(|drop| *drop > 0) else {
            return;
        };
        let (_, end) = crate::resp::subscription_messages_until(&self.bytes, drop);
        self.bytes.drain(..end);
        self.base = count;
    }
}

/// A batch found in the file at start and not yet stored. Its items stay in the file
/// (read back with [`Inbox::read`]), so recovering a large inbox costs no more memory
/// than a small one.
#[derive(Debug)]
pub(crate) struct RecoveredBatch {
    pub seq: u64,
    pub origin: String,
    /// Items in the batch.
    pub count: usize,
    /// Their payload bytes as stored (what holding them in memory would cost).
    pub bytes: usize,
    pub location: Location,
}

/// What the previous process left.
#[derive(Debug, Default)]
pub struct Recovery {
    pub(crate) batches: Vec<RecoveredBatch>,
    /// Unix ms at which a read from CPA began that the previous process never finished.
    pub interrupted_read_at_ms: Option<i64>,
    /// Bytes of a torn or corrupt tail that were cut off.
    pub discarded_bytes: u64,
    /// Items recovered from the bytes of a response the previous process was still
    /// reading when it stopped (they are among the held batches).
    pub recovered_items: usize,
}

impl Recovery {
    /// Events (items) the previous process received and had not stored.
    pub fn held_items(&self) -> usize {
        self.batches.iter().map(|batch| batch.count).sum()
    }
}

/// An inbox file failure, with the path.
#[derive(Debug, thiserror::Error)]
#[error("collector inbox {path}: {message}")]
pub struct InboxError {
    /// The inbox file.
    pub path: String,
    /// What failed (open, read, rewrite), with the OS error.
    pub message: String,
}

/// The open inbox file.
pub struct Inbox {
    path: PathBuf,
    file: File,
    len: u64,
    /// The read in progress.
    read: Option<OpenRead>,
    /// Bytes of batches still held (for compaction).
    held_bytes: u64,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Inbox")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

impl Inbox {
    /// Opens (or creates) the inbox at `path` and reads what the previous process left.
    pub fn open(path: &Path) -> Result<(Inbox, Recovery), InboxError> {
        let error = |message: String| InboxError {
            path: path.display().to_string(),
            message,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options
            .open(path)
            .map_err(|cause| error(format!("open: {cause}")))?;
        let file_len = file
            .metadata()
            .map_err(|cause| error(format!("read: {cause}")))?
            .len();
        // The records are read one at a time through a fixed buffer: only the held
        // batches' places and the bytes of a read left open are kept.
        let mut reader = std::io::BufReader::with_capacity(COPY_BUFFER, file);
        let scanned =
            scan(&mut reader, file_len).map_err(|cause| error(format!("read: {cause}")))?;
        let mut file = reader.into_inner();
        let valid_len = scanned.valid_len;
        let mut recovery = scanned.recovery;
        recovery.discarded_bytes = file_len - valid_len;
        if recovery.discarded_bytes > 0 {
            file.set_len(valid_len)
                .map_err(|cause| error(format!("cut a torn tail: {cause}")))?;
        }
        file.seek(SeekFrom::Start(valid_len))
            .map_err(|cause| error(format!("seek: {cause}")))?;
        let held_bytes = recovery
            .batches
            .iter()
            .map(|batch| batch.location.len)
            .sum();
        let mut inbox = Inbox {
            path: path.to_path_buf(),
            file,
            len: valid_len,
            read: None,
            held_bytes,
        };
        // The file starts afresh with only what is held: stored batches and markers go,
        // so an interrupted read is reported once. The items recovered from an open
        // read's bytes become a batch of their own at the end.
        let held: Vec<Location> = recovery
            .batches
            .iter()
            .map(|batch| batch.location)
            .collect();
        let locations = inbox
            .rewrite(&held, scanned.from_response.as_ref())
            .map_err(|cause| error(format!("rewrite: {cause}")))?;
        if let Some(batch) = scanned.from_response {
            recovery.batches.push(RecoveredBatch {
                seq: batch.seq,
                origin: batch.origin,
                count: batch.items.len(),
                bytes: batch.items.iter().map(item_len).sum(),
                location: Location { offset: 0, len: 0 },
            });
        }
        for (batch, location) in recovery.batches.iter_mut().zip(locations) {
            batch.location = location;
        }
        Ok((inbox, recovery))
    }

    /// The inbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one batch and syncs it to disk. On failure the file is cut back, so a
    /// later append starts on a record boundary.
    #[cfg(test)]
    pub(crate) fn append(
        &mut self,
        seq: u64,
        received_at_ms: i64,
        origin: &str,
        items: &[RawItem],
    ) -> std::io::Result<Location> {
        let location = self.append_unsynced(seq, received_at_ms, origin, items)?;
        self.file.sync_data()?;
        Ok(location)
    }

    /// A handle on the file to sync it without holding the inbox (a sync can take
    /// milliseconds, and the bytes of reads keep arriving meanwhile).
    pub(crate) fn sync_handle(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// Appends one batch without syncing it (see [`Inbox::sync_handle`]). On failure the
    /// file is cut back, so a later append starts on a record boundary.
    pub(crate) fn append_unsynced(
        &mut self,
        seq: u64,
        received_at_ms: i64,
        origin: &str,
        items: &[RawItem],
    ) -> std::io::Result<Location> {
        let body = encode_batch(seq, received_at_ms, origin, items);
        let offset = self.len;
        let result = self.write_record(KIND_BATCH, &body);
        match result {
            Ok(()) => {
                let len = (HEADER + body.len()) as u64;
                self.held_bytes += len;
                if let Some(read) = self.read.as_mut() {
                    // The batch carries every item of the response read so far.
                    read.response.clear();
                }
                Ok(Location { offset, len })
            }
            Err(error) => {
                self.cut_back(offset);
                Err(error)
            }
        }
    }

    /// Reads a held batch back (one that was not kept in memory).
    pub(crate) fn read(&mut self, location: Location) -> std::io::Result<Vec<RawItem>> {
        let mut record = vec![0u8; location.len as usize];
        self.file.seek(SeekFrom::Start(location.offset))?;
        let read = self.file.read_exact(&mut record);
        self.file.seek(SeekFrom::Start(self.len))?;
        read?;
        match parse_record(&record) {
            Some((KIND_BATCH, body, _)) => decode_batch(body)
                .map(|batch| batch.items)
                .ok_or_else(|| std::io::Error::other("held batch does not decode")),
            _ => Err(std::io::Error::other("held batch record is damaged")),
        }
    }

    /// Records that everything up to `seq` is stored. With nothing held any more the file
    /// is emptied; a large file holding little is rewritten with what is held.
    pub(crate) fn committed(
        &mut self,
        seq: u64,
        location: Option<Location>,
        still_held: &[(u64, Location)],
    ) -> std::io::Result<Vec<(u64, Location)>> {
        if let Some(location) = location {
            self.held_bytes = self.held_bytes.saturating_sub(location.len);
        }
        if still_held.is_empty() {
            self.file.set_len(0)?;
            self.len = 0;
            self.file.seek(SeekFrom::Start(0))?;
            self.held_bytes = 0;
            self.reopen_read()?;
            return Ok(Vec::new());
        }
        self.write_record(KIND_COMMITTED, &seq.to_le_bytes())?;
        if self.len > COMPACT_AT && self.held_bytes < self.len / 2 {
            return self.compact(still_held);
        }
        Ok(still_held.to_vec())
    }

    /// Marks the start of a read from CPA (a pop, or a subscription being open) whose
    /// items come from `origin`.
    pub(crate) fn read_began(
        &mut self,
        at_ms: i64,
        kind: ReadKind,
        origin: &str,
    ) -> std::io::Result<()> {
        self.read = None;
        self.write_mark(OpenRead {
            offset: 0,
            at_ms,
            kind,
            origin: origin.to_string(),
            response: Vec::new(),
            format: None,
            stream: SubscriptionStream::default(),
            clean: true,
        })
    }

    /// Writes the mark of `read` (and the response bytes it holds) at the end of the file
    /// and makes it the open read.
    fn write_mark(&mut self, mut read: OpenRead) -> std::io::Result<()> {
        let kind = match read.kind {
            ReadKind::Pop => KIND_POP_BEGAN,
            ReadKind::Subscription => KIND_READ_BEGAN,
        };
        let mut body = Vec::with_capacity(8 + read.origin.len());
        body.extend_from_slice(&read.at_ms.to_le_bytes());
        body.extend_from_slice(read.origin.as_bytes());
        read.offset = self.len;
        read.clean = true;
        self.write_record(kind, &body)?;
        if read.stream.base > 0 {
            self.write_record(KIND_COVERED, &read.stream.base.to_le_bytes())?;
        }
        if let Some(format) = read.format
            && !read.response.is_empty()
        {
            self.write_response(format, &read.response)?;
        }
        if !read.stream.bytes.is_empty() {
            self.write_response(ResponseFormat::Subscription, &read.stream.bytes)?;
        }
        read.clean = read.stream.base == 0;
        self.read = Some(read);
        Ok(())
    }

    fn write_response(&mut self, format: ResponseFormat, bytes: &[u8]) -> std::io::Result<()> {
        let mut body = Vec::with_capacity(1 + bytes.len());
        body.push(format as u8);
        body.extend_from_slice(bytes);
        self.write_record(KIND_RESPONSE, &body)
    }

    /// Writes the open read's mark again after the file was emptied or rewritten.
    fn reopen_read(&mut self) -> std::io::Result<()> {
        match self.read.take() {
            Some(read) => self.write_mark(read),
            None => Ok(()),
        }
    }

    /// Appends bytes of the response being read, as they arrive (not synced: a killed
    /// process leaves them in the page cache). Without an open read they mean nothing and
    /// are not written.
    pub(crate) fn response_bytes(
        &mut self,
        format: ResponseFormat,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let Some(read) = self.read.as_mut() else {
            return Ok(());
        };
        if bytes.is_empty() {
            return Ok(());
        }
        if format == ResponseFormat::Subscription {
            read.stream.bytes.extend_from_slice(bytes);
        } else {
            if read.format != Some(format) {
                read.format = Some(format);
                read.response.clear();
            }
            read.response.extend_from_slice(bytes);
        }
        self.write_response(format, bytes)
    }

    /// Records that the open subscription's first `count` messages are in batches (each
    /// written before this), so a restart does not recover them from its bytes again.
    pub(crate) fn covered(&mut self, count: u64) -> std::io::Result<()> {
        let Some(read) = self.read.as_mut() else {
            return Ok(());
        };
        read.stream.covered(count);
        self.write_record(KIND_COVERED, &count.to_le_bytes())
    }

    /// Marks the end of a read. A read that left nothing but its mark and response bytes
    /// (it brought nothing, or what it brought could not be written) is cut off again, so
    /// idle polling does not grow the file.
    pub(crate) fn read_ended(&mut self, at_ms: i64) -> std::io::Result<()> {
        let Some(read) = self.read.take() else {
            return Ok(());
        };
        if read.clean {
            self.file.set_len(read.offset)?;
            self.len = read.offset;
            self.file.seek(SeekFrom::Start(read.offset))?;
            return Ok(());
        }
        self.write_record(KIND_READ_ENDED, &at_ms.to_le_bytes())
    }

    fn write_record(&mut self, kind: u8, body: &[u8]) -> std::io::Result<()> {
        let mut record = Vec::with_capacity(HEADER + body.len());
        record.push(kind);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        record.extend_from_slice(body);
        let offset = self.len;
        if let Err(error) = self.file.write_all(&record) {
            self.cut_back(offset);
            return Err(error);
        }
        self.len += record.len() as u64;
        if !matches!(kind, KIND_READ_BEGAN | KIND_POP_BEGAN | KIND_RESPONSE)
            && let Some(read) = self.read.as_mut()
        {
            read.clean = false;
        }
        Ok(())
    }

    fn cut_back(&mut self, offset: u64) {
        if self.file.set_len(offset).is_ok() {
            self.len = offset;
        }
        let _ = self.file.seek(SeekFrom::Start(self.len));
    }

    /// Rewrites the file with only the held batches (copied record by record from their
    /// current locations through one fixed buffer, so compacting a large inbox costs no
    /// more memory than a small one), then swaps it in atomically.
    fn compact(&mut self, held: &[(u64, Location)]) -> std::io::Result<Vec<(u64, Location)>> {
        let locations: Vec<Location> = held.iter().map(|(_, location)| *location).collect();
        let relocated = self.rewrite(&locations, None)?;
        Ok(held.iter().map(|(seq, _)| *seq).zip(relocated).collect())
    }

    /// Replaces the file with the records at `held` (copied through one fixed buffer)
    /// and then `extra` encoded as a batch, dropping everything else; returns where the
    /// records now sit, in that order.
    fn rewrite(
        &mut self,
        held: &[Location],
        extra: Option<&DecodedBatch>,
    ) -> std::io::Result<Vec<Location>> {
        self.replace_with(|source, out| {
            let mut buffer = vec![0u8; COPY_BUFFER];
            let mut locations = Vec::with_capacity(held.len() + 1);
            let mut offset = 0u64;
            for location in held {
                source.seek(SeekFrom::Start(location.offset))?;
                let mut left = location.len;
                while left > 0 {
                    let step =
                        usize::try_from(left).map_or(COPY_BUFFER, |left| left.min(COPY_BUFFER));
                    source.read_exact(&mut buffer[..step])?;
                    out.write_all(&buffer[..step])?;
                    left -= step as u64;
                }
                locations.push(Location {
                    offset,
                    len: location.len,
                });
                offset += location.len;
            }
            if let Some(batch) = extra {
                let body = encode_batch(batch.seq, 0, &batch.origin, &batch.items);
                out.write_all(&[KIND_BATCH])?;
                out.write_all(&(body.len() as u32).to_le_bytes())?;
                out.write_all(&crc32fast::hash(&body).to_le_bytes())?;
                out.write_all(&body)?;
                let len = (HEADER + body.len()) as u64;
                locations.push(Location { offset, len });
                offset += len;
            }
            Ok((locations, offset))
        })
    }

    /// Writes a new file with `fill` (given the current file to copy from and the new
    /// one to write to; it returns the records' locations and the new length), syncs it
    /// and swaps it in atomically.
    fn replace_with(
        &mut self,
        fill: impl FnOnce(
            &mut File,
            &mut std::io::BufWriter<File>,
        ) -> std::io::Result<(Vec<Location>, u64)>,
    ) -> std::io::Result<Vec<Location>> {
        let temporary = self.path.with_extension("inbox-compact");
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = std::io::BufWriter::with_capacity(COPY_BUFFER, options.open(&temporary)?);
        let filled = fill(&mut self.file, &mut out);
        // Copying moved the current file's position: appends go on at its end.
        self.file.seek(SeekFrom::Start(self.len))?;
        let (locations, offset) = filled?;
        let out = out
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        out.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        if let Some(parent) = self.path.parent()
            && let Ok(directory) = File::open(parent)
        {
            let _ = directory.sync_all();
        }
        let mut file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        self.file = file;
        self.len = offset;
        self.held_bytes = offset;
        self.reopen_read()?;
        Ok(locations)
    }
}

/// What [`scan`] found.
struct Scanned {
    /// The held batches (their places in the file) and what else the file says.
    recovery: Recovery,
    /// The items recovered from the bytes of a read left open, as a batch of their own.
    from_response: Option<DecodedBatch>,
    /// The length of the valid prefix.
    valid_len: u64,
}

/// Reads records from the start of `file` (`file_len` bytes) until the end or the first
/// damaged one, keeping only the places of batches, never their items: memory stays
/// bounded by one read's response bytes however large the file is.
/// `file` must be at its start.
fn scan<R: Read + Seek>(
    file: &mut std::io::BufReader<R>,
    file_len: u64,
) -> std::io::Result<Scanned> {
    let mut recovery = Recovery::default();
    let mut offset = 0u64;
    let mut committed: Option<u64> = None;
    let mut reading: Option<ScannedRead> = None;
    let mut small = Vec::new();
    while let Some((kind, body_len)) = check_record(file, file_len - offset)? {
        let len = HEADER as u64 + body_len;
        // The checksum matched; the body is read again for what it says (usually from
        // the buffer still holding it).
        file.seek_relative(-i64::try_from(body_len).unwrap_or(i64::MAX))?;
        let mut body = (&mut *file).take(body_len);
        match kind {
            KIND_BATCH => {
                let Some(batch) = batch_summary(&mut body)? else {
                    break;
                };
                if let Some(read) = reading.as_mut() {
                    read.response.clear();
                }
                recovery.batches.push(RecoveredBatch {
                    seq: batch.seq,
                    origin: batch.origin,
                    count: batch.count,
                    bytes: batch.bytes,
                    location: Location { offset, len },
                });
            }
            KIND_READ_BEGAN | KIND_POP_BEGAN => {
                small.clear();
                body.read_to_end(&mut small)?;
                let Some(at) = small.get(..8).and_then(|at| <[u8; 8]>::try_from(at).ok()) else {
                    break;
                };
                reading = Some(ScannedRead {
                    at_ms: i64::from_le_bytes(at),
                    pop: kind == KIND_POP_BEGAN,
                    origin: String::from_utf8_lossy(&small[8..]).into_owned(),
                    format: None,
                    response: Vec::new(),
                    stream: SubscriptionStream::default(),
                });
            }
            KIND_RESPONSE => {
                let mut format = [0u8; 1];
                if body_len == 0 {
                    break;
                }
                body.read_exact(&mut format)?;
                let Some(format) = ResponseFormat::from_byte(format[0]) else {
                    break;
                };
                if let Some(read) = reading.as_mut() {
                    if format == ResponseFormat::Subscription {
                        body.read_to_end(&mut read.stream.bytes)?;
                    } else {
                        if read.format != Some(format) {
                            read.format = Some(format);
                            read.response.clear();
                        }
                        body.read_to_end(&mut read.response)?;
                    }
                }
            }
            KIND_COMMITTED | KIND_READ_ENDED | KIND_COVERED => {
                if body_len != 8 {
                    break;
                }
                let mut value = [0u8; 8];
                body.read_exact(&mut value)?;
                match kind {
                    KIND_COMMITTED => {
                        let seq = u64::from_le_bytes(value);
                        committed = Some(committed.map_or(seq, |old| old.max(seq)));
                    }
                    KIND_COVERED => {
                        if let Some(read) = reading.as_mut() {
                            read.stream.covered(u64::from_le_bytes(value));
                        }
                    }
                    _ => reading = None,
                }
            }
            _ => break,
        }
        // On to the next record, past whatever of this body was not read.
        let unread = i64::try_from(body.limit()).unwrap_or(i64::MAX);
        file.seek_relative(unread)?;
        offset += len;
    }
    let last_seq = recovery
        .batches
        .iter()
        .map(|batch| batch.seq)
        .chain(committed)
        .max()
        .unwrap_or(0);
    if let Some(committed) = committed {
        recovery.batches.retain(|batch| batch.seq > committed);
    }
    let mut from_response = None;
    if let Some(read) = reading {
        let mut complete = false;
        let mut items = Vec::new();
        if let Some(format) = read.format {
            let (response, whole) = format.recover(&read.response);
            complete = whole;
            items = response;
        }
        items.extend(ResponseFormat::Subscription.recover(&read.stream.bytes).0);
        if !items.is_empty() {
            recovery.recovered_items += items.len();
            from_response = Some(DecodedBatch {
                seq: last_seq + 1,
                origin: read.origin,
                items,
            });
        }
        // A pop whose whole response is here lost nothing; anything else may have.
        if !(read.pop && complete) {
            recovery.interrupted_read_at_ms = Some(read.at_ms);
        }
    }
    Ok(Scanned {
        recovery,
        from_response,
        valid_len: offset,
    })
}

/// `(kind, body length)` of the record `file` is at, with `left` bytes from there to the
/// end of the file, if it is whole and its checksum matches (the body is checked through
/// a fixed buffer, never held whole). Leaves `file` at the end of the record when it is.
fn check_record(file: &mut impl Read, left: u64) -> std::io::Result<Option<(u8, u64)>> {
    match read_checked_record(file, left) {
        // The file ended sooner than its length said: a torn tail like any other.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        outcome => outcome,
    }
}

fn read_checked_record(file: &mut impl Read, left: u64) -> std::io::Result<Option<(u8, u64)>> {
    let Some(body_left) = left.checked_sub(HEADER as u64) else {
        return Ok(None);
    };
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header)?;
    let kind = header[0];
    let len = u64::from(u32::from_le_bytes([
        header[1], header[2], header[3], header[4],
    ]));
    let crc = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
    if len > body_left {
        return Ok(None);
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = [0u8; 8 * 1024];
    let mut unread = len;
    while unread > 0 {
        let step = usize::try_from(unread).map_or(buffer.len(), |unread| unread.min(buffer.len()));
        file.read_exact(&mut buffer[..step])?;
        hasher.update(&buffer[..step]);
        unread -= step as u64;
    }
    Ok((hasher.finalize() == crc).then_some((kind, len)))
}

/// What a batch record holds, without its items.
struct BatchSummary {
    seq: u64,
    origin: String,
    count: usize,
    bytes: usize,
}

/// Reads a batch body from `body` (limited to the record) checking it decodes exactly as
/// [`decode_batch`] would, without keeping its items; `None` when it does not.
fn batch_summary(body: &mut impl Read) -> std::io::Result<Option<BatchSummary>> {
    fn take<const N: usize>(body: &mut impl Read) -> std::io::Result<Option<[u8; N]>> {
        let mut out = [0u8; N];
        match body.read_exact(&mut out) {
            Ok(()) => Ok(Some(out)),
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(error) => Err(error),
        }
    }
    /// Skips one length-prefixed field; its length, or `None` when it is cut short.
    fn skip_sized(body: &mut impl Read) -> std::io::Result<Option<usize>> {
        let Some(len) = take::<4>(body)? else {
            return Ok(None);
        };
        let len = u64::from(u32::from_le_bytes(len));
        let skipped = std::io::copy(&mut body.take(len), &mut std::io::sink())?;
        Ok((skipped == len).then_some(len as usize))
    }
    let Some(seq) = take::<8>(body)? else {
        return Ok(None);
    };
    if take::<8>(body)?.is_none() {
        return Ok(None);
    }
    let Some(origin_len) = take::<2>(body)? else {
        return Ok(None);
    };
    let origin_len = u64::from(u16::from_le_bytes(origin_len));
    let mut origin = Vec::new();
    if body.take(origin_len).read_to_end(&mut origin)? as u64 != origin_len {
        return Ok(None);
    }
    let Ok(origin) = String::from_utf8(origin) else {
        return Ok(None);
    };
    let Some(count) = take::<4>(body)? else {
        return Ok(None);
    };
    let count = u32::from_le_bytes(count) as usize;
    let mut bytes = 0usize;
    for _ in 0..count {
        let Some([tag]) = take::<1>(body)? else {
            return Ok(None);
        };
        let fields = match tag {
            0 => 1,
            1 => 2,
            _ => return Ok(None),
        };
        for _ in 0..fields {
            let Some(len) = skip_sized(body)? else {
                return Ok(None);
            };
            bytes += len;
        }
    }
    // Nothing may follow the last item.
    if take::<1>(body)?.is_some() {
        return Ok(None);
    }
    Ok(Some(BatchSummary {
        seq: u64::from_le_bytes(seq),
        origin,
        count,
        bytes,
    }))
}

/// The payload bytes of one item (what holding it in memory costs).
pub(crate) fn item_len(item: &RawItem) -> usize {
    match item {
        RawItem::Payload(bytes) => bytes.len(),
        RawItem::Invalid { raw, reason } => raw.len() + reason.len(),
    }
}

/// A read found open while scanning.
struct ScannedRead {
    at_ms: i64,
    pop: bool,
    origin: String,
    format: Option<ResponseFormat>,
    response: Vec<u8>,
    stream: SubscriptionStream,
}

/// `(kind, body, record length)` of the record at the start of `bytes`, if it is whole
/// and its checksum matches.
fn parse_record(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    if bytes.len() < HEADER {
        return None;
    }
    let kind = bytes[0];
    let len = u32::from_le_bytes(bytes[1..5].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[5..9].try_into().ok()?);
    let body = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    (crc32fast::hash(body) == crc).then_some((kind, body, HEADER + len))
}

struct DecodedBatch {
    seq: u64,
    origin: String,
    items: Vec<RawItem>,
}

fn encode_batch(seq: u64, received_at_ms: i64, origin: &str, items: &[RawItem]) -> Vec<u8> {
    let size: usize = items
        .iter()
        .map(|item| match item {
            RawItem::Payload(bytes) => 5 + bytes.len(),
            RawItem::Invalid { raw, reason } => 9 + raw.len() + reason.len(),
        })
        .sum();
    let origin = &origin.as_bytes()[..origin.len().min(u16::MAX as usize)];
    let mut body = Vec::with_capacity(26 + origin.len() + size);
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&received_at_ms.to_le_bytes());
    body.extend_from_slice(&(origin.len() as u16).to_le_bytes());
    body.extend_from_slice(origin);
    body.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for item in items {
        match item {
            RawItem::Payload(bytes) => {
                body.push(0);
                put_bytes(&mut body, bytes);
            }
            RawItem::Invalid { raw, reason } => {
                body.push(1);
                put_bytes(&mut body, raw.as_bytes());
                put_bytes(&mut body, reason.as_bytes());
            }
        }
    }
    body
}

fn put_bytes(body: &mut Vec<u8>, bytes: &[u8]) {
    body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    body.extend_from_slice(bytes);
}

fn decode_batch(body: &[u8]) -> Option<DecodedBatch> {
    let mut reader = Reader { bytes: body };
    let seq = u64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let _received_at_ms = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let origin_len = u16::from_le_bytes(reader.take(2)?.try_into().ok()?) as usize;
    let origin = String::from_utf8(reader.take(origin_len)?.to_vec()).ok()?;
    let count = u32::from_le_bytes(reader.take(4)?.try_into().ok()?) as usize;
    let mut items = Vec::with_capacity(count.min(body.len()));
    for _ in 0..count {
        match reader.take(1)?[0] {
            0 => items.push(RawItem::Payload(Bytes::copy_from_slice(reader.sized()?))),
            1 => {
                let raw = String::from_utf8_lossy(reader.sized()?).into_owned();
                let reason = String::from_utf8_lossy(reader.sized()?).into_owned();
                items.push(RawItem::Invalid { raw, reason });
            }
            _ => return None,
        }
    }
    reader
        .bytes
        .is_empty()
        .then_some(DecodedBatch { seq, origin, items })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < len {
            return None;
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Some(head)
    }

    fn sized(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn payload(text: &str) -> RawItem {
        RawItem::Payload(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// The items of each recovered batch, read back from the inbox.
    fn held(inbox: &mut Inbox, recovery: &Recovery) -> Vec<Vec<RawItem>> {
        recovery
            .batches
            .iter()
            .map(|batch| inbox.read(batch.location).unwrap())
            .collect()
    }

    fn invalid() -> RawItem {
        RawItem::Invalid {
            raw: "7".into(),
            reason: "unexpected usage queue item 7".into(),
        }
    }

    #[test]
    fn held_batches_are_replayed_and_stored_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, recovery) = Inbox::open(&path).unwrap();
        assert!(recovery.batches.is_empty());
        let first = inbox
            .append(1, 10, "http://cpa", &[payload("{\"a\":1}"), invalid()])
            .unwrap();
        let second = inbox
            .append(2, 11, "http://cpa", &[payload("{\"b\":2}")])
            .unwrap();
        let third = inbox
            .append(3, 12, "http://other", &[payload("{\"c\":3}")])
            .unwrap();
        inbox
            .committed(1, Some(first), &[(2, second), (3, third)])
            .unwrap();
        drop(inbox);

        let (mut inbox, recovery) = Inbox::open(&path).unwrap();
        let seqs: Vec<u64> = recovery.batches.iter().map(|batch| batch.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(recovery.batches[1].origin, "http://other");
        assert_eq!(held(&mut inbox, &recovery)[0], [payload("{\"b\":2}")]);
        assert_eq!(recovery.interrupted_read_at_ms, None);
        assert_eq!(recovery.held_items(), 2);
        // A batch can be read back from where it sits.
        let location = recovery.batches[1].location;
        assert_eq!(inbox.read(location).unwrap(), [payload("{\"c\":3}")]);
        inbox.committed(3, Some(location), &[]).unwrap();
        assert!(inbox.is_empty());
        drop(inbox);
        let (_, recovery) = Inbox::open(&path).unwrap();
        assert!(recovery.batches.is_empty());
    }

    #[test]
    fn a_large_inbox_is_recovered_whole_and_only_what_is_held_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, _) = Inbox::open(&path).unwrap();
        let batch = |seq: u64| -> Vec<RawItem> {
            (0..200)
                .map(|index| {
                    if index == 7 {
                        return RawItem::Invalid {
                            raw: format!("{seq}"),
                            reason: "unexpected usage queue item".into(),
                        };
                    }
                    let pad = "p".repeat((seq as usize * 31 + index) % 400);
                    payload(&format!(r#"{{"seq":{seq},"index":{index},"pad":"{pad}"}}"#))
                })
                .collect()
        };
        // 400 pops of 200 items each (about 20 MiB), each with its marks and response
        // bytes; the first 150 batches are stored.
        let mut held_locations = Vec::new();
        for seq in 1..=400u64 {
            inbox
                .read_began(seq as i64, ReadKind::Pop, "http://cpa")
                .unwrap();
            inbox
                .response_bytes(ResponseFormat::HttpQueue, b"[{\"x\":1}]")
                .unwrap();
            let location = inbox
                .append_unsynced(seq, seq as i64, "http://cpa", &batch(seq))
                .unwrap();
            inbox.read_ended(seq as i64).unwrap();
            held_locations.push((seq, location));
            if seq == 300 {
                let still_held = held_locations.split_off(150);
                inbox.committed(150, None, &still_held).unwrap();
                held_locations = still_held;
            }
        }
        // The process is killed while reading a pop's response, after a torn write.
        inbox
            .read_began(9_999, ReadKind::Pop, "http://cpa")
            .unwrap();
        inbox
            .response_bytes(ResponseFormat::HttpQueue, br#"[{"tail":1},{"tail":2},{"ta"#)
            .unwrap();
        let written = inbox.len();
        drop(inbox);
        assert!(written > 16 * 1024 * 1024, "only {written} bytes");
        let torn = [KIND_BATCH, 0xff, 0xff, 0, 0, 1, 2, 3, 4, 5, 6];
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&torn)
            .unwrap();

        let (mut inbox, recovery) = Inbox::open(&path).unwrap();
        assert_eq!(recovery.discarded_bytes, torn.len() as u64);
        assert_eq!(recovery.interrupted_read_at_ms, Some(9_999));
        assert_eq!(recovery.recovered_items, 2);
        let seqs: Vec<u64> = recovery.batches.iter().map(|batch| batch.seq).collect();
        let expected_seqs: Vec<u64> = (151..=401).collect();
        assert_eq!(seqs, expected_seqs);
        assert_eq!(recovery.held_items(), 250 * 200 + 2);
        let items = held(&mut inbox, &recovery);
        for (seq, items) in (151..=400).zip(&items) {
            assert_eq!(*items, batch(seq), "batch {seq}");
        }
        assert_eq!(
            items[250],
            [payload(r#"{"tail":1}"#), payload(r#"{"tail":2}"#)]
        );
        for recovered in &recovery.batches {
            assert_eq!(recovered.origin, "http://cpa");
            assert_eq!(recovered.count, items[(recovered.seq - 151) as usize].len());
        }
        // Only the held batches are left in the file: the next start finds the same
        // batches and no interrupted read.
        let stored_before: u64 = recovery
            .batches
            .iter()
            .map(|batch| batch.location.len)
            .sum();
        assert_eq!(inbox.len(), stored_before);
        assert!(inbox.len() < written);
        drop(inbox);
        let (mut inbox, again) = Inbox::open(&path).unwrap();
        assert_eq!(again.interrupted_read_at_ms, None);
        assert_eq!(again.discarded_bytes, 0);
        let seqs: Vec<u64> = again.batches.iter().map(|batch| batch.seq).collect();
        assert_eq!(seqs, expected_seqs);
        assert_eq!(held(&mut inbox, &again), items);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_what_precedes_it_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, _) = Inbox::open(&path).unwrap();
        inbox.append(1, 10, "o", &[payload("{\"a\":1}")]).unwrap();
        let whole = inbox.len();
        inbox.append(2, 11, "o", &[payload("{\"b\":2}")]).unwrap();
        drop(inbox);
        let bytes = std::fs::read(&path).unwrap();
        for cut in whole as usize + 1..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let (inbox, recovery) = Inbox::open(&path).unwrap();
            assert_eq!(recovery.batches.len(), 1, "cut at {cut}");
            assert_eq!(recovery.discarded_bytes, cut as u64 - whole);
            assert_eq!(inbox.len(), whole);
        }
        // A flipped byte inside the last record is damage too.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 2;
        damaged[last] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let (_, recovery) = Inbox::open(&path).unwrap();
        assert_eq!(recovery.batches.len(), 1);
    }

    #[test]
    fn an_unfinished_read_is_reported_once_and_idle_reads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, _) = Inbox::open(&path).unwrap();
        for at in 0..100 {
            inbox.read_began(at, ReadKind::Subscription, "o").unwrap();
            inbox.read_ended(at).unwrap();
        }
        assert!(inbox.is_empty(), "empty reads grow the file");
        inbox.read_began(500, ReadKind::Subscription, "o").unwrap();
        inbox.append(1, 500, "o", &[payload("{}")]).unwrap();
        inbox.read_ended(501).unwrap();
        inbox.read_began(777, ReadKind::Subscription, "o").unwrap();
        drop(inbox);
        let (inbox, recovery) = Inbox::open(&path).unwrap();
        assert_eq!(recovery.interrupted_read_at_ms, Some(777));
        assert_eq!(recovery.batches.len(), 1);
        drop(inbox);
        let (_, recovery) = Inbox::open(&path).unwrap();
        assert_eq!(recovery.interrupted_read_at_ms, None, "reported twice");
        assert_eq!(recovery.batches.len(), 1);
    }

    #[test]
    fn emptying_while_a_read_is_open_keeps_the_read_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, _) = Inbox::open(&path).unwrap();
        inbox.read_began(42, ReadKind::Subscription, "o").unwrap();
        let location = inbox.append(1, 43, "o", &[payload("{}")]).unwrap();
        inbox.committed(1, Some(location), &[]).unwrap();
        drop(inbox);
        let (_, recovery) = Inbox::open(&path).unwrap();
        assert!(recovery.batches.is_empty());
        assert_eq!(recovery.interrupted_read_at_ms, Some(42));
    }

    #[test]
    fn compaction_keeps_exactly_the_held_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, _) = Inbox::open(&path).unwrap();
        let big = "x".repeat(1024 * 1024);
        let mut held = Vec::new();
        for seq in 1..=20u64 {
            let location = inbox.append(seq, 0, "o", &[payload(&big)]).unwrap();
            held.push((seq, location));
        }
        // Store the first 18 one by one: the file shrinks to the last two.
        for _ in 0..18 {
            let (seq, location) = held.remove(0);
            held = inbox.committed(seq, Some(location), &held).unwrap();
        }
        assert!(
            inbox.len() < 12 * 1024 * 1024,
            "not compacted: {}",
            inbox.len()
        );
        for (_, location) in &held {
            assert_eq!(inbox.read(*location).unwrap(), [payload(&big)]);
        }
        drop(inbox);
        let (_, recovery) = Inbox::open(&path).unwrap();
        let seqs: Vec<u64> = recovery.batches.iter().map(|batch| batch.seq).collect();
        assert_eq!(seqs, [19, 20]);
    }

    /// A usage-queue body of three events, a string element and a number.
    const BODY: &str = r#"[{"a":1,"s":"x,]"}, {"b":[2,3]} ,"{\"c\":3}",{"d":4},12345]"#;

    fn complete_items_before(cut: usize) -> Vec<RawItem> {
        // Where each element (with what ends it) is complete in BODY.
        let ends = [
            (
                BODY.find(", {\"b").unwrap(),
                payload(r#"{"a":1,"s":"x,]"}"#),
            ),
            (BODY.find(" ,\"").unwrap(), payload(r#"{"b":[2,3]}"#)),
            (BODY.find(",{\"d").unwrap(), payload(r#"{"c":3}"#)),
            (BODY.find(",123").unwrap(), payload(r#"{"d":4}"#)),
            (BODY.len(), payload("12345")),
        ];
        ends.into_iter()
            .filter(|(end, _)| *end <= cut)
            .map(|(_, item)| item)
            .collect()
    }

    #[test]
    fn a_response_cut_anywhere_gives_back_every_complete_item() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        for cut in 0..=BODY.len() {
            std::fs::remove_file(&path).ok();
            let (mut inbox, _) = Inbox::open(&path).unwrap();
            inbox
                .read_began(1_000, ReadKind::Pop, "http://cpa")
                .unwrap();
            // The bytes arrive in chunks of three.
            for chunk in BODY.as_bytes()[..cut].chunks(3) {
                inbox
                    .response_bytes(ResponseFormat::HttpQueue, chunk)
                    .unwrap();
            }
            drop(inbox);
            let (mut inbox, recovery) = Inbox::open(&path).unwrap();
            let items: Vec<RawItem> = held(&mut inbox, &recovery).concat();
            assert_eq!(items, complete_items_before(cut), "cut at {cut}");
            assert_eq!(recovery.recovered_items, items.len());
            if let Some(batch) = recovery.batches.first() {
                assert_eq!(batch.origin, "http://cpa");
            }
            // Only a whole response means nothing of the read was lost.
            let whole = cut == BODY.len();
            assert_eq!(
                recovery.interrupted_read_at_ms,
                (!whole).then_some(1_000),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_resp_reply_cut_anywhere_gives_back_every_complete_item() {
        let reply = b"*3\r\n$7\r\n{\"a\":1}\r\n$-1\r\n$7\r\n{\"b\":2}\r\n";
        let first_end = b"*3\r\n$7\r\n{\"a\":1}".len();
        let second_end = reply.len() - 2;
        for cut in 0..=reply.len() {
            let (items, whole) = ResponseFormat::RespPop.recover(&reply[..cut]);
            let mut expected = Vec::new();
            if cut >= first_end {
                expected.push(payload("{\"a\":1}"));
            }
            if cut >= second_end {
                expected.push(payload("{\"b\":2}"));
            }
            assert_eq!(items, expected, "cut at {cut}");
            assert_eq!(whole, cut == reply.len(), "cut at {cut}");
        }
        assert_eq!(ResponseFormat::RespPop.recover(b"*-1\r\n"), (vec![], true));
    }

    #[test]
    fn a_held_batch_supersedes_the_response_bytes_and_emptying_keeps_the_open_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, _) = Inbox::open(&path).unwrap();
        // A whole response, then its batch: replayed once, from the batch.
        inbox.read_began(5, ReadKind::Pop, "o").unwrap();
        inbox
            .response_bytes(ResponseFormat::HttpQueue, br#"[{"a":1}]"#)
            .unwrap();
        let location = inbox.append(1, 6, "o", &[payload(r#"{"a":1}"#)]).unwrap();
        inbox.read_ended(7).unwrap();
        // The next read is cut short while the store commits the first batch and the file
        // is emptied: the bytes already written survive that.
        inbox.read_began(8, ReadKind::Pop, "o").unwrap();
        inbox
            .response_bytes(ResponseFormat::HttpQueue, br#"[{"b":2},{"c"#)
            .unwrap();
        inbox.committed(1, Some(location), &[]).unwrap();
        inbox
            .response_bytes(ResponseFormat::HttpQueue, br#"":3},{"d":4"#)
            .unwrap();
        drop(inbox);
        let (mut inbox, recovery) = Inbox::open(&path).unwrap();
        let items: Vec<RawItem> = held(&mut inbox, &recovery).concat();
        assert_eq!(items, [payload(r#"{"b":2}"#), payload(r#"{"c":3}"#)]);
        assert_eq!(recovery.interrupted_read_at_ms, Some(8));
    }

    #[test]
    fn an_empty_pop_leaves_nothing_and_a_subscription_stays_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, _) = Inbox::open(&path).unwrap();
        for at in 0..10 {
            inbox.read_began(at, ReadKind::Pop, "o").unwrap();
            inbox
                .response_bytes(ResponseFormat::HttpQueue, b"[]")
                .unwrap();
            inbox.read_ended(at).unwrap();
        }
        assert!(inbox.is_empty(), "empty pops grow the file");
        // A subscription drained CPA's queue completely and then was killed: messages may
        // have been in flight, so the read counts as interrupted.
        inbox.read_began(20, ReadKind::Subscription, "o").unwrap();
        inbox
            .response_bytes(ResponseFormat::RespPop, b"*0\r\n")
            .unwrap();
        drop(inbox);
        let (_, recovery) = Inbox::open(&path).unwrap();
        assert!(recovery.batches.is_empty());
        assert_eq!(recovery.interrupted_read_at_ms, Some(20));
    }

    fn message_frame(payload: &str) -> Vec<u8> {
        format!(
            "*3\r\n$7\r\nmessage\r\n$5\r\nusage\r\n${}\r\n{payload}\r\n",
            payload.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_subscription_keeps_its_messages_not_yet_in_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox");
        let (mut inbox, _) = Inbox::open(&path).unwrap();
        inbox.read_began(3, ReadKind::Subscription, "o").unwrap();
        let mut stream = Vec::new();
        stream.extend(message_frame(r#"{"support_refresh":true}"#));
        stream.extend(b"*3\r\n$9\r\nsubscribe\r\n$5\r\nusage\r\n:1\r\n".iter());
        for n in 1..=4 {
            stream.extend(message_frame(&format!("{{\"n\":{n}}}")));
        }
        // The frames arrive in uneven pieces; the first three messages are held.
        for piece in stream.chunks(11) {
            inbox
                .response_bytes(ResponseFormat::Subscription, piece)
                .unwrap();
        }
        let location = inbox
            .append(
                1,
                4,
                "o",
                &[
                    payload(r#"{"support_refresh":true}"#),
                    payload(r#"{"n":1}"#),
                ],
            )
            .unwrap();
        inbox.covered(2).unwrap();
        // The store commits it and the file is emptied while the subscription is open.
        inbox.committed(1, Some(location), &[]).unwrap();
        inbox.append(2, 5, "o", &[payload(r#"{"n":2}"#)]).unwrap();
        inbox.covered(3).unwrap();
        // Half of a fifth message arrives, then the process is killed.
        let fifth = message_frame(r#"{"n":5}"#);
        inbox
            .response_bytes(ResponseFormat::Subscription, &fifth[..fifth.len() - 4])
            .unwrap();
        drop(inbox);
        let (mut inbox, recovery) = Inbox::open(&path).unwrap();
        let items = held(&mut inbox, &recovery);
        assert_eq!(
            items,
            [
                vec![payload(r#"{"n":2}"#)],
                vec![payload(r#"{"n":3}"#), payload(r#"{"n":4}"#)]
            ]
        );
        assert_eq!(recovery.recovered_items, 2);
        assert_eq!(recovery.interrupted_read_at_ms, Some(3));
    }
}
