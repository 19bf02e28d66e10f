//! Where the first RESP2 reply in a read buffer ends, found without decoding it.
//!
//! The codec decodes a reply from the start of the buffer each time it is asked, and
//! answers "incomplete" until the last byte is there. A reply that arrives in many small
//! reads (a slow link, a large pop) would be decoded again after every read: the work
//! grows with the square of the reply's size. [`ReplyScan`] keeps its place between reads
//! and looks at each byte about once, so the codec runs once per complete reply.
//!
//! The scan follows the codec's grammar step by step (type byte, line up to the first
//! `\r\n`, integers and lengths parsed as the codec parses them, a bulk string's data
//! and the two bytes after it taken as they are), so it answers
//! [`Scan::Incomplete`] exactly when the codec would: for anything it does not accept
//! it answers [`Scan::Invalid`] and leaves the verdict (the error text) to the codec.

/// What the scan found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// A whole reply, this many bytes long.
    Complete(usize),
    /// Not a whole reply yet; more bytes may complete it.
    Incomplete,
    /// Bytes the codec refuses (it says why).
    Invalid,
}

/// The scan of one reply, kept between reads of the same buffer. Reset it whenever
/// bytes are taken off the front of the buffer.
#[derive(Debug, Clone)]
pub(crate) struct ReplyScan {
    /// Start of the element being read; every byte before it belongs to complete
    /// elements of the reply.
    element: usize,
    /// No `\r\n` starts between the element's type byte and this offset.
    searched: usize,
    /// Once a bulk string's length is read: where its data and the two bytes after it end.
    bulk_end: Option<usize>,
    /// Elements still to read before the reply is whole (the reply itself counts one).
    pending: u64,
}

impl Default for ReplyScan {
    fn default() -> Self {
        ReplyScan {
            element: 0,
            searched: 0,
            bulk_end: None,
            pending: 1,
        }
    }
}

impl ReplyScan {
    /// Scans `buffer` on from where the last call stopped (`buffer` holds the same bytes
    /// as then, perhaps with more after them).
    pub(crate) fn scan(&mut self, buffer: &[u8]) -> Scan {
        loop {
            if self.pending == 0 {
                return Scan::Complete(self.element);
            }
            if let Some(end) = self.bulk_end {
                if buffer.len() < end {
                    return Scan::Incomplete;
                }
                self.finish(end);
                continue;
            }
            let Some(&kind) = buffer.get(self.element) else {
                return Scan::Incomplete;
            };
            if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
                return Scan::Invalid;
            }
            let from = self.searched.max(self.element + 1);
            let Some(found) = find_crlf(buffer.get(from..).unwrap_or_default()) else {
                // A `\r` at the very end may meet its `\n` in the next read.
                self.searched = buffer.len().saturating_sub(1).max(self.element + 1);
                return Scan::Incomplete;
            };
            let line = &buffer[self.element + 1..from + found];
            let next = from + found + 2;
            match kind {
                b'+' | b'-' => self.finish(next),
                b':' => {
                    if parse::<i64>(line).is_none() {
                        return Scan::Invalid;
                    }
                    self.finish(next);
                }
                b'$' => match parse::<isize>(line) {
                    Some(-1) => self.finish(next),
                    Some(len) if len >= 0 => {
                        // A length no buffer can reach stays incomplete, as in the codec.
                        self.bulk_end = Some(
                            next.checked_add(len.unsigned_abs())
                                .and_then(|end| end.checked_add(2))
                                .unwrap_or(usize::MAX),
                        );
                    }
                    _ => return Scan::Invalid,
                },
                _ => match parse::<isize>(line) {
                    Some(-1) => self.finish(next),
                    Some(count) if count >= 0 => {
                        self.pending =
                            (self.pending - 1).saturating_add(count.unsigned_abs() as u64);
                        self.element = next;
                        self.searched = 0;
                    }
                    _ => return Scan::Invalid,
                },
            }
        }
    }

    fn finish(&mut self, end: usize) {
        self.pending -= 1;
        self.element = end;
        self.searched = 0;
        self.bulk_end = None;
    }
}

/// The offset of the first `\r\n` in `bytes`.
fn find_crlf(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = memchr_cr(&bytes[from..]) {
        let at = from + offset;
        match bytes.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
    None
}

fn memchr_cr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|byte| *byte == b'\r')
}

/// An integer as the codec reads one: UTF-8 text that `str::parse` accepts.
fn parse<T: std::str::FromStr>(line: &[u8]) -> Option<T> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::decode::decode_range;

    /// What the codec says about `bytes`, in the scan's terms.
    fn codec(bytes: &[u8]) -> Scan {
        match decode_range(bytes) {
            Ok(Some((_, len))) => Scan::Complete(len),
            Ok(None) => Scan::Incomplete,
            Err(_) => Scan::Invalid,
        }
    }

    const REPLIES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR no such key\r\n",
        b":12\r\n",
        b":+7\r\n",
        b":-0\r\n",
        b":12a\r\n",
        b":99999999999999999999\r\n",
        b"$5\r\nhello\r\n",
        b"$5\r\nhelloXY",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"$-2\r\n",
        b"$+3\r\nabc\r\n",
        b"$x\r\n",
        b"$\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$3\r\nabc\r\n$-1\r\n",
        b"*3\r\n*2\r\n:1\r\n:2\r\n+a\rb\r\n$2\r\n\r\n\r\n",
        b"*2\r\n_\r\n",
        b"*1\r\n%1\r\n",
        b"*99999999999999999999\r\n",
        b"*9223372036854775807\r\n:1\r\n",
        b"$9223372036854775807\r\nabc",
        b"*3\r\n$7\r\nmessage\r\n$5\r\nusage\r\n$13\r\n{\"model\":\"x\"}\r\n",
        b"+a\rb\r\r\n",
        b"+\xff\xfe\r\n",
        b"-\xff\r\n",
        b"*1\r\n\r\n",
        b"x",
    ];

    #[test]
    fn the_scan_agrees_with_the_codec_on_every_prefix() {
        for reply in REPLIES {
            let mut padded = reply.to_vec();
            padded.extend_from_slice(b"+next\r\n");
            for bytes in [*reply, &padded[..]] {
                for end in 0..=bytes.len() {
                    let prefix = &bytes[..end];
                    let fresh = ReplyScan::default().scan(prefix);
                    let expected = codec(prefix);
                    // The scan may find invalid bytes the codec only refuses later, or
                    // not at all (a reply it cannot build), but "incomplete" and
                    // "complete" must be the codec's.
                    match expected {
                        Scan::Incomplete | Scan::Complete(_) => {
                            assert_eq!(fresh, expected, "{:?}", String::from_utf8_lossy(prefix));
                        }
                        Scan::Invalid => assert_ne!(
                            fresh,
                            Scan::Incomplete,
                            "{:?}",
                            String::from_utf8_lossy(prefix)
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn scanning_read_by_read_is_scanning_at_once() {
        for reply in REPLIES {
            for step in 1..=5 {
                let mut scan = ReplyScan::default();
                let mut last = Scan::Incomplete;
                let mut end = 0;
                while end < reply.len() && last == Scan::Incomplete {
                    end = (end + step).min(reply.len());
                    last = scan.scan(&reply[..end]);
                }
                assert_eq!(
                    last,
                    ReplyScan::default().scan(&reply[..end]),
                    "{:?} step {step}",
                    String::from_utf8_lossy(reply)
                );
            }
        }
    }
}
