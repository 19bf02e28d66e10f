//! RESP transports to CPA's API port: the connection (TCP or TLS, `AUTH` first and
//! nothing before it), the pop source and the subscription.
//!
//! Framing uses `redis-protocol`'s RESP2 codec, the same one the fake CPA serves with.
//! Before handing bytes to it, the first byte of each reply is checked so that a peer that
//! is not RESP (an HTTP server answers `HTTP/1.1 400 ...`) yields the error text operators
//! know from the Go manager: `unsupported RESP prefix 'H'`.

use std::fmt::Write as _;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};

use self::scan::{ReplyScan, Scan};
use crate::holding::Tap;
use crate::inbox::ResponseFormat;
use crate::settings::{CPA_DEFAULT_PORT, CollectorSettings, Endpoint, PopSide};
use crate::source::{ErrorKind, RawBatch, RawItem, SourceError, Stage, Transport, UsageSource};

mod scan;

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence after which the subscription sends `PING`.
const PING_AFTER: Duration = Duration::from_secs(30);
/// How long a `PING` may go unanswered before the connection counts as dead (40 s of
/// silence in total, as recommended for CPA, which sends no keep-alives itself).
const PONG_WAIT: Duration = Duration::from_secs(10);

pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
pub(crate) type BoxStream = Pin<Box<dyn Stream>>;

/// Opens TCP, then TLS for `https://` (SNI = host, no ALPN).
pub(crate) async fn dial(endpoint: &Endpoint, skip_verify: bool) -> Result<BoxStream, String> {
    let authority = endpoint.authority();
    let tcp = match timeout(
        DIAL_TIMEOUT,
        TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return Err(format!("dial tcp {authority}: {error}")),
        Err(_) => return Err(format!("dial tcp {authority}: i/o timeout")),
    };
    let _ = tcp.set_nodelay(true);
    if !endpoint.tls {
        return Ok(Box::pin(tcp));
    }
    let config = crate::tls::client_config(skip_verify)?;
    let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
        .map_err(|error| format!("invalid TLS server name {:?}: {error}", endpoint.host))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match timeout(DIAL_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(Box::pin(tls)),
        Ok(Err(error)) => Err(format!("tls handshake with {authority}: {error}")),
        Err(_) => Err(format!("tls handshake with {authority}: i/o timeout")),
    }
}

/// Why reading a reply failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyError {
    Io(String),
    Eof,
    Timeout,
    /// The reply starts with a byte RESP does not know.
    Prefix(u8),
    Protocol(String),
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Io(error) => formatter.write_str(error),
            ReplyError::Eof => formatter.write_str("EOF"),
            ReplyError::Timeout => formatter.write_str("i/o timeout"),
            ReplyError::Prefix(byte) => write!(
                formatter,
                "unsupported RESP prefix {}",
                go_quote_byte(*byte)
            ),
            ReplyError::Protocol(error) => write!(formatter, "RESP protocol error: {error}"),
        }
    }
}

/// Renders a byte as Go's `%q` renders `rune(b)`: printable characters as themselves,
/// C escapes, `\xHH` below 0x80 and `\u00HH` for non-printable Latin-1.
pub fn go_quote_byte(byte: u8) -> String {
    let mut out = String::from("'");
    match byte {
        b'\'' => out.push_str("\\'"),
        b'\\' => out.push_str("\\\\"),
        0x07 => out.push_str("\\a"),
        0x08 => out.push_str("\\b"),
        0x0c => out.push_str("\\f"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        0x0b => out.push_str("\\v"),
        0x20..=0x7e => out.push(char::from(byte)),
        0x00..=0x7f => {
            let _ = write!(out, "\\x{byte:02x}");
        }
        // Go's unicode.IsPrint for U+0080..U+00FF: controls and U+00A0/U+00AD are not printable.
        0x80..=0xa0 | 0xad => {
            let _ = write!(out, "\\u{byte:04x}");
        }
        _ => out.push(char::from(byte)),
    }
    out.push('\'');
    out
}

/// One RESP connection with its read buffer.
pub(crate) struct RespConnection {
    stream: BoxStream,
    buffer: BytesMut,
    /// How far the reply at the front of `buffer` was scanned.
    scan: ReplyScan,
    /// Where the bytes read go as they arrive (a pop's reply, a subscription's frames).
    tap: Option<(Tap, ResponseFormat)>,
}

impl RespConnection {
    /// Dials and authenticates. `AUTH` is the very first command: anything sent before it
    /// counts as a failed login on CPA.
    pub(crate) async fn open(settings: &CollectorSettings) -> Result<RespConnection, SourceError> {
        let endpoint = Endpoint::parse(&settings.upstream, Some(CPA_DEFAULT_PORT))
            .map_err(|error| SourceError::new(Stage::Connect, error))?;
        let stream = dial(&endpoint, settings.tls_skip_verify)
            .await
            .map_err(|error| SourceError::new(Stage::Connect, error))?;
        let mut connection = RespConnection {
            stream,
            buffer: BytesMut::with_capacity(64 * 1024),
            scan: ReplyScan::default(),
            tap: None,
        };
        let key = settings.management_key.expose().as_bytes();
        let reply = connection
            .command(&[b"AUTH", key])
            .await
            .map_err(|error| SourceError::new(Stage::Auth, error.to_string()))?;
        if let BytesFrame::Error(message) = reply {
            return Err(auth_error(&message));
        }
        Ok(connection)
    }

    pub(crate) async fn send(&mut self, args: &[&[u8]]) -> Result<(), ReplyError> {
        let mut out = Vec::with_capacity(16 + args.iter().map(|arg| arg.len() + 16).sum::<usize>());
        let _ = write!(Adapter(&mut out), "*{}\r\n", args.len());
        for arg in args {
            let _ = write!(Adapter(&mut out), "${}\r\n", arg.len());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        let write = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        match timeout(COMMAND_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(ReplyError::Io(error.to_string())),
            Err(_) => Err(ReplyError::Timeout),
        }
    }

    pub(crate) async fn command(&mut self, args: &[&[u8]]) -> Result<BytesFrame, ReplyError> {
        self.send(args).await?;
        match timeout(COMMAND_TIMEOUT, self.read_reply()).await {
            Ok(reply) => reply,
            Err(_) => Err(ReplyError::Timeout),
        }
    }

    /// Reads one reply. Cancel-safe: partial data stays in the buffer.
    pub(crate) async fn read_reply(&mut self) -> Result<BytesFrame, ReplyError> {
        loop {
            if let Some(frame) = take_reply(&mut self.buffer, &mut self.scan)? {
                return Ok(frame);
            }
            if self.buffer.capacity() - self.buffer.len() < 16 * 1024 {
                self.buffer.reserve(64 * 1024);
            }
            let before = self.buffer.len();
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) => return Err(ReplyError::Eof),
                Ok(_) => {
                    if let Some((tap, format)) = &self.tap {
                        tap.received(*format, &self.buffer[before..]);
                    }
                }
                Err(error) => return Err(ReplyError::Io(error.to_string())),
            }
        }
    }
}

/// Takes one complete reply off the front of `buffer`; `Ok(None)` while the reply is
/// still incomplete (the bytes stay in the buffer). `scan` belongs to `buffer`: the codec
/// decodes only once the scan found the reply whole (or bytes it must judge), so a reply
/// arriving in many reads is not decoded again after each of them.
fn take_reply(
    buffer: &mut BytesMut,
    scan: &mut ReplyScan,
) -> Result<Option<BytesFrame>, ReplyError> {
    let Some(&first) = buffer.first() else {
        return Ok(None);
    };
    match first {
        b'+' | b'-' | b':' | b'$' | b'*' => {
            if scan.scan(buffer) == Scan::Incomplete {
                return Ok(None);
            }
            match decode_bytes_mut(buffer) {
                Ok(Some((frame, _, _))) => {
                    *scan = ReplyScan::default();
                    Ok(Some(frame))
                }
                Ok(None) => Ok(None),
                Err(error) => Err(ReplyError::Protocol(error.to_string())),
            }
        }
        // RESP3 null, accepted as Go does.
        b'_' => {
            if buffer.len() < 3 {
                return Ok(None);
            }
            if &buffer[..3] == b"_\r\n" {
                let _ = buffer.split_to(3);
                return Ok(Some(BytesFrame::Null));
            }
            Err(ReplyError::Protocol("malformed RESP3 null".into()))
        }
        other => Err(ReplyError::Prefix(other)),
    }
}

/// What the RESP transports make of one reply read from CPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMeaning {
    /// As the reply to `LPOP`/`RPOP`: the items taken, or the error (`lastError` text).
    pub pop: Result<RawBatch, String>,
    /// As a frame on a subscription: a message's payload, `Ok(None)` for a frame that
    /// carries none (a confirmation, a pong, an empty message), or why the subscription
    /// fails.
    pub subscription: Result<Option<Bytes>, String>,
}

/// Reads replies from bytes arriving in `chunks`, as a connection to CPA does, and says
/// what each means to the pop and the subscription. Ends at the first error of the reader
/// itself (its text is returned) or, once the bytes run out, with `EOF` if a reply was
/// left incomplete. The outcome does not depend on how the bytes are split into chunks;
/// the fuzz targets check that.
pub fn read_replies<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<ReplyMeaning>, Option<String>) {
    let mut buffer = BytesMut::new();
    let mut scan = ReplyScan::default();
    let mut replies = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match take_reply(&mut buffer, &mut scan) {
                Ok(Some(frame)) => replies.push(ReplyMeaning {
                    pop: pop_items(frame.clone()).map_err(|error| error.to_string()),
                    subscription: match subscription_step(frame, false) {
                        SubscriptionStep::Message(payload) => Ok(Some(payload)),
                        SubscriptionStep::Nothing => Ok(None),
                        SubscriptionStep::Ended => Err("subscription ended".to_string()),
                        SubscriptionStep::Failed(error) => Err(error),
                    },
                }),
                Ok(None) => break,
                Err(error) => return (replies, Some(error.to_string())),
            }
        }
    }
    let end = (!buffer.is_empty()).then(|| ReplyError::Eof.to_string());
    (replies, end)
}

/// `write!` into a `Vec<u8>` without going through `std::io`.
struct Adapter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Adapter<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// Classifies an `AUTH` error reply. A rejected key (CPA: `invalid management key` or
/// `missing management key`; Redis: `WRONGPASS`/`invalid password`) must not be retried
/// in a loop; a ban or `remote management disabled` may be retried slowly.
fn auth_error(message: &str) -> SourceError {
    let lower = message.to_ascii_lowercase();
    let rejected = lower.contains("invalid management key")
        || lower.contains("missing management key")
        || lower.contains("wrongpass")
        || lower.contains("invalid password")
        || lower.contains("invalid username-password");
    let error = SourceError::new(Stage::Auth, message.to_string());
    if rejected {
        error.with_kind(ErrorKind::AuthRejected)
    } else {
        error
    }
}

/// `LPOP`/`RPOP <queue> <count>` over one authenticated connection, reconnecting after errors.
pub struct RespPop {
    settings: CollectorSettings,
    connection: Option<RespConnection>,
    tap: Option<Tap>,
}

impl RespPop {
    /// A source that pops the RESP list `settings.queue` (`LPOP`/`RPOP` with a count);
    /// it connects and authenticates on the first pop unless [`RespPop::connect`] did.
    pub fn new(settings: CollectorSettings) -> RespPop {
        RespPop {
            settings,
            connection: None,
            tap: None,
        }
    }

    /// The same source, writing each reply's bytes to `tap` as they arrive.
    pub(crate) fn with_tap(mut self, tap: Tap) -> RespPop {
        self.tap = Some(tap);
        self
    }

    /// Connects and authenticates now (otherwise the first pop does).
    pub async fn connect(&mut self) -> Result<(), SourceError> {
        if self.connection.is_none() {
            self.connection = Some(RespConnection::open(&self.settings).await?);
        }
        Ok(())
    }

    async fn pop(&mut self, max_items: u32) -> Result<RawBatch, SourceError> {
        self.connect().await?;
        let Some(connection) = self.connection.as_mut() else {
            return Err(SourceError::new(Stage::Connect, "not connected"));
        };
        let count = max_items.max(1).to_string();
        let side: PopSide = self.settings.pop_side;
        if let Some(tap) = &self.tap
            && !connection.buffer.is_empty()
        {
            tap.received(ResponseFormat::RespPop, &connection.buffer);
        }
        connection.tap = self.tap.clone().map(|tap| (tap, ResponseFormat::RespPop));
        let reply = connection
            .command(&[
                side.command(),
                self.settings.queue.as_bytes(),
                count.as_bytes(),
            ])
            .await;
        connection.tap = None;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                self.connection = None;
                return Err(SourceError::new(Stage::Consume, error.to_string()));
            }
        };
        pop_items(reply)
    }
}

/// The items of the first bytes of a pop reply (a reply cut short by a crash), as
/// [`pop_items`] would have taken them, and whether the reply is whole: every bulk string
/// of the array that arrived entirely.
pub(crate) fn recover_pop_reply(bytes: &[u8]) -> (RawBatch, bool) {
    let mut buffer = BytesMut::from(bytes);
    if let Ok(Some(frame)) = take_reply(&mut buffer, &mut ReplyScan::default()) {
        return (pop_items(frame).unwrap_or_default(), true);
    }
    let mut items = Vec::new();
    let Some((count, mut rest)) = resp_header(bytes, b'*') else {
        return (items, false);
    };
    for _ in 0..count.max(0) {
        let Some((len, after)) = resp_header(rest, b'$') else {
            break;
        };
        let Ok(len) = usize::try_from(len) else {
            // A nil element carries nothing.
            rest = after;
            continue;
        };
        let Some(payload) = after.get(..len) else {
            break;
        };
        items.push(RawItem::Payload(Bytes::copy_from_slice(payload)));
        rest = after.get(len + 2..).unwrap_or_default();
    }
    (items, false)
}

/// The messages among the complete frames at the start of a subscription's bytes, as the
/// subscription reader would take them (up to its first failing frame), and where the
/// last complete frame ends.
pub(crate) fn subscription_messages(bytes: &[u8]) -> (RawBatch, usize) {
    let mut items = Vec::new();
    let end = walk_subscription(bytes, u64::MAX, |payload| {
        items.push(RawItem::Payload(payload));
    });
    (items, end)
}

/// How many messages the first `limit` messages of a subscription's bytes are (fewer
/// when fewer are complete) and where the frame of the last of them ends.
pub(crate) fn subscription_messages_until(bytes: &[u8], limit: u64) -> (u64, usize) {
    let mut count = 0;
    let end = walk_subscription(bytes, limit, |_| count += 1);
    (count, end)
}

/// Reads frames off `bytes` until `limit` messages were seen, a frame is incomplete or
/// the subscription would fail; returns where the last frame read ends.
fn walk_subscription(bytes: &[u8], limit: u64, mut message: impl FnMut(Bytes)) -> usize {
    let mut buffer = BytesMut::from(bytes);
    let mut scan = ReplyScan::default();
    let mut seen = 0;
    let mut end = 0;
    while seen < limit {
        let Ok(Some(frame)) = take_reply(&mut buffer, &mut scan) else {
            break;
        };
        match subscription_step(frame, false) {
            SubscriptionStep::Message(payload) => {
                seen += 1;
                message(payload);
            }
            SubscriptionStep::Nothing => {}
            SubscriptionStep::Ended | SubscriptionStep::Failed(_) => break,
        }
        end = bytes.len() - buffer.len();
    }
    end
}

/// `<prefix><integer>\r\n` at the start of `bytes`: the integer and what follows.
fn resp_header(bytes: &[u8], prefix: u8) -> Option<(i64, &[u8])> {
    let rest = bytes.strip_prefix(&[prefix])?;
    let end = rest.windows(2).position(|pair| pair == b"\r\n")?;
    let value = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((value, &rest[end + 2..]))
}

/// The items of a pop reply: nil for an empty queue, one string, or an array of them.
fn pop_items(reply: BytesFrame) -> Result<RawBatch, SourceError> {
    let mut items = Vec::new();
    match reply {
        BytesFrame::Null => {}
        BytesFrame::BulkString(bytes) | BytesFrame::SimpleString(bytes) => {
            if !bytes.is_empty() {
                items.push(RawItem::Payload(bytes));
            }
        }
        BytesFrame::Array(elements) => {
            for element in elements {
                if let BytesFrame::BulkString(bytes) | BytesFrame::SimpleString(bytes) = element {
                    items.push(RawItem::Payload(bytes));
                }
            }
        }
        BytesFrame::Integer(_) => {
            return Err(SourceError::new(
                Stage::Consume,
                "unexpected RESP pop response int64",
            ));
        }
        BytesFrame::Error(message) => {
            return Err(SourceError::new(Stage::Consume, message.to_string()));
        }
    }
    Ok(items)
}

impl UsageSource for RespPop {
    fn transport(&self) -> Transport {
        Transport::Resp
    }

    async fn next_batch(&mut self, max_items: u32) -> Result<RawBatch, SourceError> {
        self.pop(max_items).await
    }
}

enum SubscriptionEvent {
    Message(Bytes),
    Failed(String),
    /// The server acknowledged `UNSUBSCRIBE` or closed after it: nothing more will come.
    Ended,
}

/// Messages a subscription buffers by default before the reader waits for the consumer.
pub const DEFAULT_SUBSCRIBE_BUFFER: usize = 5_000;

/// A live `SUBSCRIBE <queue>`. A reader task drains the socket continuously into a
/// channel of at most `buffer` messages, so CPA does not see this manager as a slow
/// subscriber while the consumer is briefly busy; a consumer that stops taking messages
/// for longer must unsubscribe ([`RespSubscription::close`]) rather than let the reader
/// stop reading (CPA drops a subscriber 256 messages behind and loses a message).
pub struct RespSubscription {
    messages: mpsc::Receiver<SubscriptionEvent>,
    unsubscribe: Option<oneshot::Sender<()>>,
    reader: tokio::task::JoinHandle<()>,
    pending_error: Option<String>,
    ended: bool,
}

impl RespSubscription {
    /// Connects, authenticates and subscribes with the default buffer
    /// ([`DEFAULT_SUBSCRIBE_BUFFER`] messages); returns once CPA acknowledged.
    pub async fn open(settings: &CollectorSettings) -> Result<RespSubscription, SourceError> {
        RespSubscription::open_tapped(settings, None, DEFAULT_SUBSCRIBE_BUFFER).await
    }

    /// Connects, authenticates and subscribes, buffering at most `buffer` received
    /// messages (at least one) until [`UsageSource::next_batch`] takes them.
    pub async fn open_bounded(
        settings: &CollectorSettings,
        buffer: usize,
    ) -> Result<RespSubscription, SourceError> {
        RespSubscription::open_tapped(settings, None, buffer).await
    }

    /// [`RespSubscription::open_bounded`], writing every byte that arrives after the
    /// acknowledgement to `tap` as it is read, before anything parses it.
    pub(crate) async fn open_tapped(
        settings: &CollectorSettings,
        tap: Option<Tap>,
        buffer: usize,
    ) -> Result<RespSubscription, SourceError> {
        let mut connection = RespConnection::open(settings).await?;
        let channel = settings.queue.as_bytes();
        let reply = connection
            .command(&[b"SUBSCRIBE", channel])
            .await
            .map_err(|error| SourceError::new(Stage::Subscribe, error.to_string()))?;
        match &reply {
            BytesFrame::Array(items)
                if items.len() >= 3
                    && frame_text(&items[0])
                        .is_some_and(|kind| kind.eq_ignore_ascii_case(b"subscribe"))
                    && frame_text(&items[1]) == Some(channel) => {}
            BytesFrame::Error(message) => {
                let lower = message.to_ascii_lowercase();
                let error = if lower.contains("unknown command") || lower.contains("unsupported") {
                    SourceError::new(Stage::Subscribe, "RESP server does not support SUBSCRIBE")
                        .with_kind(ErrorKind::Unsupported)
                } else {
                    SourceError::new(Stage::Subscribe, message.to_string())
                };
                return Err(error);
            }
            other => {
                return Err(SourceError::new(
                    Stage::Subscribe,
                    format!("unexpected SUBSCRIBE response: {other:?}"),
                ));
            }
        }
        if let Some(tap) = tap {
            // Messages may have come with the acknowledgement.
            tap.received(ResponseFormat::Subscription, &connection.buffer);
            connection.tap = Some((tap, ResponseFormat::Subscription));
        }
        let (sender, messages) = mpsc::channel(buffer.max(1));
        let (unsubscribe, unsubscribe_rx) = oneshot::channel();
        let reader = tokio::spawn(read_subscription(connection, sender, unsubscribe_rx));
        Ok(RespSubscription {
            messages,
            unsubscribe: Some(unsubscribe),
            reader,
            pending_error: None,
            ended: false,
        })
    }

    /// Sends `UNSUBSCRIBE` and returns every message that arrived before CPA acknowledged
    /// it (or closed, or 2 s passed). From then on CPA queues events again, so the next run
    /// pops them.
    pub async fn close(mut self) -> RawBatch {
        if let Some(unsubscribe) = self.unsubscribe.take() {
            let _ = unsubscribe.send(());
        }
        let mut items = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.messages.recv()).await {
            match event {
                SubscriptionEvent::Message(payload) => items.push(RawItem::Payload(payload)),
                SubscriptionEvent::Failed(_) | SubscriptionEvent::Ended => break,
            }
        }
        self.reader.abort();
        items
    }
}

impl Drop for RespSubscription {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl UsageSource for RespSubscription {
    fn transport(&self) -> Transport {
        Transport::Subscribe
    }

    /// Waits for at least one message, then takes whatever else is already buffered.
    async fn next_batch(&mut self, max_items: u32) -> Result<RawBatch, SourceError> {
        if let Some(error) = self.pending_error.take() {
            return Err(SourceError::new(Stage::Subscribe, error));
        }
        if self.ended {
            return Err(SourceError::new(Stage::Subscribe, "subscription ended"));
        }
        let mut items = Vec::new();
        let first = self.messages.recv().await;
        let mut next = first;
        loop {
            match next {
                Some(SubscriptionEvent::Message(payload)) => items.push(RawItem::Payload(payload)),
                Some(SubscriptionEvent::Failed(error)) => {
                    self.pending_error = Some(error);
                    break;
                }
                Some(SubscriptionEvent::Ended) | None => {
                    self.ended = true;
                    break;
                }
            }
            if items.len() >= max_items.max(1) as usize {
                break;
            }
            next = match self.messages.try_recv() {
                Ok(event) => Some(event),
                Err(_) => break,
            };
        }
        if items.is_empty() {
            let error = self
                .pending_error
                .take()
                .unwrap_or_else(|| "subscription ended".to_string());
            return Err(SourceError::new(Stage::Subscribe, error));
        }
        Ok(items)
    }
}

fn frame_text(frame: &BytesFrame) -> Option<&[u8]> {
    match frame {
        BytesFrame::BulkString(bytes) | BytesFrame::SimpleString(bytes) => Some(bytes),
        _ => None,
    }
}

async fn read_subscription(
    mut connection: RespConnection,
    sender: mpsc::Sender<SubscriptionEvent>,
    mut unsubscribe: oneshot::Receiver<()>,
) {
    let mut last_received = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut closing: Option<Instant> = None;
    loop {
        let wait_until = match (closing, ping_sent) {
            (Some(deadline), _) => deadline,
            (None, Some(sent)) => sent + PONG_WAIT,
            (None, None) => last_received + PING_AFTER,
        };
        let frame = tokio::select! {
            result = tokio::time::timeout_at(wait_until, connection.read_reply()) => result,
            _ = &mut unsubscribe, if closing.is_none() => {
                closing = Some(Instant::now() + Duration::from_secs(2));
                if connection.send(&[b"UNSUBSCRIBE"]).await.is_err() {
                    let _ = sender.send(SubscriptionEvent::Ended).await;
                    return;
                }
                continue;
            }
        };
        let frame = match frame {
            Ok(Ok(frame)) => frame,
            Ok(Err(error)) => {
                let event = if closing.is_some() && error == ReplyError::Eof {
                    SubscriptionEvent::Ended
                } else {
                    SubscriptionEvent::Failed(error.to_string())
                };
                let _ = sender.send(event).await;
                return;
            }
            Err(_elapsed) => {
                if closing.is_some() {
                    let _ = sender.send(SubscriptionEvent::Ended).await;
                    return;
                }
                if ping_sent.is_some() {
                    let _ = sender
                        .send(SubscriptionEvent::Failed(format!(
                            "no reply from CPA for {} s; reconnecting",
                            (PING_AFTER + PONG_WAIT).as_secs()
                        )))
                        .await;
                    return;
                }
                if let Err(error) = connection.send(&[b"PING"]).await {
                    let _ = sender
                        .send(SubscriptionEvent::Failed(error.to_string()))
                        .await;
                    return;
                }
                ping_sent = Some(Instant::now());
                continue;
            }
        };
        last_received = Instant::now();
        ping_sent = None;
        match subscription_step(frame, closing.is_some()) {
            SubscriptionStep::Message(payload) => {
                if sender
                    .send(SubscriptionEvent::Message(payload))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            SubscriptionStep::Nothing => {}
            SubscriptionStep::Ended => {
                let _ = sender.send(SubscriptionEvent::Ended).await;
                return;
            }
            SubscriptionStep::Failed(error) => {
                let _ = sender.send(SubscriptionEvent::Failed(error)).await;
                return;
            }
        }
    }
}

/// What one frame on a subscription means.
enum SubscriptionStep {
    /// A `message` with a non-empty payload.
    Message(Bytes),
    /// A confirmation, a pong or an empty message.
    Nothing,
    /// CPA confirmed our `UNSUBSCRIBE`.
    Ended,
    /// Anything else: the subscription is broken.
    Failed(String),
}

fn subscription_step(frame: BytesFrame, closing: bool) -> SubscriptionStep {
    match frame {
        BytesFrame::Array(mut items) if !items.is_empty() => {
            let kind = frame_text(&items[0])
                .map(<[u8]>::to_ascii_lowercase)
                .unwrap_or_default();
            match kind.as_slice() {
                b"message" if items.len() >= 3 => match items.swap_remove(2) {
                    BytesFrame::BulkString(payload) | BytesFrame::SimpleString(payload)
                        if !payload.is_empty() =>
                    {
                        SubscriptionStep::Message(payload)
                    }
                    _ => SubscriptionStep::Nothing,
                },
                b"unsubscribe" if closing => SubscriptionStep::Ended,
                b"subscribe" | b"unsubscribe" | b"pong" => SubscriptionStep::Nothing,
                _ => SubscriptionStep::Failed(format!("unexpected subscription frame {kind:?}")),
            }
        }
        BytesFrame::SimpleString(text) if text.eq_ignore_ascii_case(b"pong") => {
            SubscriptionStep::Nothing
        }
        BytesFrame::Error(message) => SubscriptionStep::Failed(message.to_string()),
        other => SubscriptionStep::Failed(format!("unexpected subscription frame {other:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn non_resp_bytes_render_like_go() {
        assert_eq!(
            ReplyError::Prefix(b'H').to_string(),
            "unsupported RESP prefix 'H'"
        );
        assert_eq!(go_quote_byte(0x15), "'\\x15'");
        assert_eq!(go_quote_byte(0x00), "'\\x00'");
        assert_eq!(go_quote_byte(0x7f), "'\\x7f'");
        assert_eq!(go_quote_byte(b'\''), "'\\''");
        assert_eq!(go_quote_byte(b'\\'), "'\\\\'");
        assert_eq!(go_quote_byte(b'\n'), "'\\n'");
        assert_eq!(go_quote_byte(b'<'), "'<'");
        assert_eq!(go_quote_byte(0xc3), "'Ã'");
        assert_eq!(go_quote_byte(0xff), "'ÿ'");
        assert_eq!(go_quote_byte(0x80), "'\\u0080'");
        assert_eq!(go_quote_byte(0xa0), "'\\u00a0'");
        assert_eq!(go_quote_byte(0xad), "'\\u00ad'");
    }

    #[test]
    fn auth_replies_are_classified() {
        assert_eq!(
            auth_error("ERR invalid management key").kind,
            ErrorKind::AuthRejected
        );
        assert_eq!(
            auth_error("WRONGPASS invalid username-password pair").kind,
            ErrorKind::AuthRejected
        );
        assert_eq!(
            auth_error("ERR remote management disabled").kind,
            ErrorKind::Transient
        );
        assert_eq!(
            auth_error("ERR invalid management key").to_string(),
            "auth: ERR invalid management key"
        );
    }
}
