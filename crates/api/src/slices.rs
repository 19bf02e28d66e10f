//! Large answers handed to the connection a slice at a time.
//!
//! actix-web encodes a response body into the connection's write buffer before writing
//! it to the socket. A body given as one `Bytes` value is copied there whole, so the
//! buffer grows to the size of the largest answer the connection ever sent, and a
//! keep-alive connection keeps up to 128 KiB of it between requests: with a hundred
//! panels polling analytics that was the largest single part of the server's memory.
//! [`slice_large_bodies`] (the outermost middleware) replaces a complete body larger
//! than [`SLICE_BYTES`] by [`Slices`], which yields it in slices of that size (views
//! of the same bytes, nothing is copied to make them). The connection then copies at
//! most its write-buffer size plus one slice before it writes to the socket, so its
//! buffer stays near that size; with the server's write-buffer size of
//! [`WRITE_BUFFER_BYTES`] a connection keeps at most about 32 KiB. The answer on the
//! wire is unchanged: same bytes, same `Content-Length`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use bytes::Bytes;

/// The size of the slices a large answer is handed over in.
pub const SLICE_BYTES: usize = 8 * 1024;

/// The connection write-buffer size the server is built with
/// (`HttpServer::h1_write_buffer_size`): the buffer is written to the socket once it
/// holds this much.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// A complete body yielded in slices of [`SLICE_BYTES`].
#[derive(Debug)]
pub struct Slices {
    rest: Bytes,
    size: u64,
}

impl Slices {
    /// The body `bytes`, to be handed over a slice at a time.
    pub fn new(bytes: Bytes) -> Slices {
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        Slices { rest: bytes, size }
    }
}

impl MessageBody for Slices {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.size)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        let take = this.rest.len().min(SLICE_BYTES);
        Poll::Ready(Some(Ok(this.rest.split_to(take))))
    }
}

/// Hands every complete body larger than a slice over in slices (see the module).
/// Streamed bodies (exports, `GET /usage`, proxied answers) pass through untouched.
pub async fn slice_large_bodies(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = next.call(request).await?.map_into_boxed_body();
    Ok(response.map_body(|_, body| sliced(body)))
}

fn sliced(body: BoxBody) -> BoxBody {
    match body.size() {
        BodySize::Sized(size) if size > SLICE_BYTES as u64 => match body.try_into_bytes() {
            Ok(bytes) => BoxBody::new(Slices::new(bytes)),
            Err(body) => body,
        },
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body;

    #[actix_web::test]
    async fn a_large_body_arrives_whole_in_slices() {
        let original: Vec<u8> = (0..100_000u32).map(|index| (index % 251) as u8).collect();
        let boxed = sliced(BoxBody::new(Bytes::from(original.clone())));
        assert_eq!(boxed.size(), BodySize::Sized(100_000));
        let mut boxed = std::pin::pin!(boxed);
        let mut slices = 0;
        let mut received = Vec::new();
        while let Some(slice) = std::future::poll_fn(|cx| boxed.as_mut().poll_next(cx)).await {
            let slice = slice.expect("an infallible body");
            assert!(slice.len() <= SLICE_BYTES);
            received.extend_from_slice(&slice);
            slices += 1;
        }
        assert_eq!(received, original);
        assert_eq!(slices, 100_000usize.div_ceil(SLICE_BYTES));
    }

    #[actix_web::test]
    async fn small_and_empty_bodies_stay_complete() {
        let small = sliced(BoxBody::new(Bytes::from_static(b"{\"ok\":true}")));
        assert_eq!(
            small.try_into_bytes().expect("still one complete body"),
            Bytes::from_static(b"{\"ok\":true}")
        );
        let empty = sliced(BoxBody::new(()));
        assert_eq!(empty.size(), BodySize::Sized(0));
        let exact = sliced(BoxBody::new(Bytes::from(vec![7u8; SLICE_BYTES])));
        assert!(exact.try_into_bytes().is_ok());
        let bigger = sliced(BoxBody::new(Bytes::from(vec![7u8; SLICE_BYTES + 1])));
        assert_eq!(
            body::to_bytes(bigger).await.expect("whole").len(),
            SLICE_BYTES + 1
        );
    }
}
