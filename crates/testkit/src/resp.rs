//! The RESP side of the fake CPA: `AUTH`, `LPOP`/`RPOP <queue> [count]` and
//! `SUBSCRIBE usage|errors` with CPA's replies, including its quirks (RPOP also pops the oldest
//! items, an empty counted pop is `*0`, every pre-AUTH command is a failed login).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Shared;
use crate::auth::AuthFailure;

enum Read {
    Command(Vec<String>, Vec<Bytes>),
    /// Reply already chosen (protocol error or empty command) and whether to close.
    Reject(&'static str, bool),
    Eof,
}

pub(crate) async fn serve<S>(mut stream: S, peer: IpAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::with_capacity(4096);
    let mut authenticated = false;
    loop {
        let (args, raw) = match read_command(&mut stream, &mut buffer).await {
            Read::Command(args, raw) => (args, raw),
            Read::Reject(reply, close) => {
                if write_frame(&mut stream, &error(reply)).await.is_err() || close {
                    return;
                }
                continue;
            }
            Read::Eof => return,
        };
        let name = args[0].trim().to_ascii_lowercase();
        let reply = if name == "auth" {
            let key = match raw.len() {
                2 => &raw[1],
                3 => &raw[2],
                _ => {
                    let _ = shared.auth.check(peer, "");
                    let reply = error("ERR wrong number of arguments for 'auth' command");
                    if write_frame(&mut stream, &reply).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            match shared.auth.check(peer, &String::from_utf8_lossy(key)) {
                Ok(()) => {
                    authenticated = true;
                    BytesFrame::SimpleString(Bytes::from_static(b"OK"))
                }
                Err(failure) => error(&format!("ERR {}", failure.message())),
            }
        } else if !authenticated {
            match shared.auth.pre_auth_command(peer) {
                AuthFailure::Banned(message) => error(&format!("ERR {message}")),
                _ => error("NOAUTH Authentication required."),
            }
        } else if name == "lpop" || name == "rpop" {
            pop_reply(&name, &args, &shared)
        } else if name == "subscribe" {
            if !shared.options.subscribe_supported {
                error("ERR unknown command 'subscribe'")
            } else if args.len() != 2 {
                error("ERR wrong number of arguments for 'subscribe' command")
            } else if args[1].trim().eq_ignore_ascii_case("usage") {
                let (id, messages) = shared.queue.subscribe(shared.options.support_refresh);
                let name = args[1].trim().to_string();
                subscription(stream, buffer, (Channel::Usage(id), name), messages, shared).await;
                return;
            } else if args[1].trim().eq_ignore_ascii_case("errors") {
                let (id, messages) = shared.errors.subscribe();
                let name = args[1].trim().to_string();
                subscription(
                    stream,
                    buffer,
                    (Channel::Errors(id), name),
                    messages,
                    shared,
                )
                .await;
                return;
            } else {
                error(&format!("ERR unsupported channel '{}'", args[1].trim()))
            }
        } else {
            error(&format!("ERR unknown command '{name}'"))
        };
        if write_frame(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

fn pop_reply(name: &str, args: &[String], shared: &Shared) -> BytesFrame {
    if args.len() != 2 && args.len() != 3 {
        return error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
    }
    if !args[1].trim().eq_ignore_ascii_case("usage") {
        return error(&format!("ERR unsupported channel '{}'", args[1].trim()));
    }
    let Some(count) = args.get(2) else {
        return match shared.queue.pop(1).pop() {
            Some(item) => BytesFrame::BulkString(item),
            None => BytesFrame::Null,
        };
    };
    match count.trim().parse::<i64>() {
        Ok(count) if count > 0 => BytesFrame::Array(
            shared
                .queue
                .pop(usize::try_from(count).unwrap_or(usize::MAX))
                .into_iter()
                .map(BytesFrame::BulkString)
                .collect(),
        ),
        _ => error("ERR value is not an integer or out of range"),
    }
}

/// Subscription mode: message frames from the subscriber buffer interleaved with replies
/// to PING/UNSUBSCRIBE/QUIT. Writing blocks on the socket, exactly like CPA's writer, so a
/// client that stops reading fills its 256-message buffer and gets dropped.
async fn subscription<S>(
    mut stream: S,
    mut buffer: BytesMut,
    (channel, name): (Channel, String),
    mut messages: tokio::sync::mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The acknowledgement echoes the channel name as the client spelled it.
    let channel_bytes = Bytes::from(name);
    let ack = BytesFrame::Array(vec![
        bulk(b"subscribe"),
        BytesFrame::BulkString(channel_bytes.clone()),
        BytesFrame::Integer(1),
    ]);
    if write_frame(&mut stream, &ack).await.is_err() {
        channel.unsubscribe(&shared);
        return;
    }
    let mut undelivered = 0u64;
    loop {
        tokio::select! {
            message = messages.recv() => {
                let Some(payload) = message else {
                    // Removed as a slow subscriber (or the queue was cleared): the buffer was
                    // flushed, so close the connection.
                    return;
                };
                let frame = BytesFrame::Array(vec![
                    bulk(b"message"),
                    BytesFrame::BulkString(channel_bytes.clone()),
                    BytesFrame::BulkString(payload),
                ]);
                if write_frame(&mut stream, &frame).await.is_err() {
                    undelivered += 1;
                    break;
                }
            }
            command = read_command(&mut stream, &mut buffer) => {
                let reply = match command {
                    Read::Eof => break,
                    Read::Reject(reply, close) => {
                        let _ = write_frame(&mut stream, &error(reply)).await;
                        if close { break; }
                        continue;
                    }
                    Read::Command(args, _) => args,
                };
                match reply[0].trim().to_ascii_lowercase().as_str() {
                    "ping" => {
                        let echo = match reply.get(1) {
                            Some(text) => BytesFrame::BulkString(Bytes::from(text.clone())),
                            None => BytesFrame::Null,
                        };
                        if write_frame(&mut stream, &BytesFrame::Array(vec![bulk(b"pong"), echo])).await.is_err() {
                            break;
                        }
                    }
                    "unsubscribe" => {
                        channel.unsubscribe(&shared);
                        let frame = BytesFrame::Array(vec![
                            bulk(b"unsubscribe"),
                            BytesFrame::BulkString(channel_bytes.clone()),
                            BytesFrame::Integer(0),
                        ]);
                        let _ = write_frame(&mut stream, &frame).await;
                        break;
                    }
                    "quit" => {
                        let _ = write_frame(&mut stream, &BytesFrame::SimpleString(Bytes::from_static(b"OK"))).await;
                        break;
                    }
                    other => {
                        let other = other.to_string();
                        if write_frame(&mut stream, &error(&format!("ERR unknown command '{other}'"))).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    channel.unsubscribe(&shared);
    // What was still in this subscriber's buffer goes with the connection.
    messages.close();
    while messages.try_recv().is_ok() {
        undelivered += 1;
    }
    if let Channel::Usage(_) = channel {
        shared.queue.count_undelivered(undelivered);
    }
    let _ = stream.shutdown().await;
}

/// The channel a subscription listens to, with its subscriber id.
#[derive(Clone, Copy)]
enum Channel {
    Usage(u64),
    Errors(u64),
}

impl Channel {
    fn unsubscribe(self, shared: &Shared) {
        match self {
            Channel::Usage(id) => shared.queue.unsubscribe(id),
            Channel::Errors(id) => shared.errors.unsubscribe(id),
        }
    }
}

async fn read_command<S>(stream: &mut S, buffer: &mut BytesMut) -> Read
where
    S: AsyncRead + Unpin,
{
    loop {
        if !buffer.is_empty() {
            if buffer[0] != b'*' {
                return Read::Reject("ERR protocol error", true);
            }
            match decode_bytes_mut(buffer) {
                Ok(Some((BytesFrame::Array(items), _, _))) => {
                    if items.is_empty() {
                        return Read::Reject("ERR empty command", false);
                    }
                    let mut args = Vec::with_capacity(items.len());
                    let mut raw = Vec::with_capacity(items.len());
                    for item in items {
                        let bytes = match item {
                            BytesFrame::BulkString(bytes) | BytesFrame::SimpleString(bytes) => {
                                bytes
                            }
                            BytesFrame::Integer(value) => Bytes::from(value.to_string()),
                            BytesFrame::Null => Bytes::new(),
                            _ => return Read::Reject("ERR protocol error", true),
                        };
                        args.push(String::from_utf8_lossy(&bytes).into_owned());
                        raw.push(bytes);
                    }
                    return Read::Command(args, raw);
                }
                Ok(Some(_)) | Err(_) => return Read::Reject("ERR protocol error", true),
                Ok(None) => {}
            }
        }
        match stream.read_buf(buffer).await {
            Ok(0) if buffer.is_empty() => return Read::Eof,
            Ok(0) => return Read::Reject("ERR unexpected EOF", true),
            Ok(_) => {}
            Err(_) => return Read::Eof,
        }
    }
}

fn bulk(text: &'static [u8]) -> BytesFrame {
    BytesFrame::BulkString(Bytes::from_static(text))
}

fn error(text: &str) -> BytesFrame {
    BytesFrame::Error(text.to_string().into())
}

async fn write_frame<S>(stream: &mut S, frame: &BytesFrame) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    extend_encode(&mut out, frame, false).map_err(std::io::Error::other)?;
    stream.write_all(&out).await?;
    stream.flush().await
}
