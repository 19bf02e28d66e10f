//! Limits on what one HTTP client can hold: open connections per client address,
//! requests per keep-alive connection, and how long a request body may stall.
//!
//! The server (in `apps/cpamp-server`) sets the head-read and keep-alive timeouts on
//! actix itself; this module adds what actix lacks. [`ConnectionTracker::on_connect`]
//! runs for every accepted TCP connection and leaves a [`ConnectionTicket`] in the
//! connection's data: it counts the connection for its address until it closes.
//! [`enforce`] (a middleware) answers 503 with `Connection: close` on a connection beyond
//! the address's cap, closes a connection after its last allowed request, and wraps the
//! request body so that a body that sends nothing for the body timeout fails with
//! `408` and the connection is dropped.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use futures_util::StreamExt;

use crate::error::{ApiError, ErrorCode};

/// The limits, from the server's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once from one client address.
    pub per_address: usize,
    /// Most requests served on one keep-alive connection; the last is answered with
    /// `Connection: close`.
    pub requests_per_connection: u32,
    /// Longest wait for the next piece of a request body.
    pub body_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            per_address: 256,
            requests_per_connection: 1000,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Open connections per client address, shared by every worker.
#[derive(Debug, Default)]
pub struct ConnectionTracker {
    /// The limits applied.
    pub limits: ConnectionLimits,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One accepted connection, counted for its address while it is open.
#[derive(Debug)]
pub struct ConnectionTicket {
    tracker: Arc<ConnectionTracker>,
    address: IpAddr,
    /// The address had its cap of connections open already when this one came.
    over_limit: bool,
    /// Requests served on this connection so far.
    requests: Cell<u32>,
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        let mut open = lock(&self.tracker.open);
        if let Some(count) = open.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ConnectionTracker {
    /// A tracker applying `limits`, shared by every worker.
    pub fn new(limits: ConnectionLimits) -> Arc<ConnectionTracker> {
        Arc::new(ConnectionTracker {
            limits,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Connections open now from `address`.
    pub fn open_from(&self, address: IpAddr) -> usize {
        lock(&self.open).get(&address).copied().unwrap_or(0)
    }

    /// For `HttpServer::on_connect`: counts a new TCP connection.
    pub fn on_connect(self: &Arc<Self>, connection: &dyn Any, data: &mut Extensions) {
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        // Answers leave in several writes (large ones in slices, `slices.rs`): with
        // Nagle's algorithm a later write waits for the client's delayed ACK of the
        // earlier one, up to 40 ms on Linux.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not turn off Nagle's algorithm on a connection");
        }
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let address = peer.ip().to_canonical();
        let over_limit = {
            let mut open = lock(&self.open);
            let count = open.entry(address).or_insert(0);
            *count += 1;
            *count > self.limits.per_address
        };
        data.insert(ConnectionTicket {
            tracker: Arc::clone(self),
            address,
            over_limit,
            requests: Cell::new(0),
        });
    }
}

/// The middleware applying the limits (see the module documentation).
pub async fn enforce(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(tracker) = request
        .app_data::<web::Data<ConnectionTracker>>()
        .map(|data| data.clone().into_inner())
    else {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let (over_limit, last_request) = match request.conn_data::<ConnectionTicket>() {
        Some(ticket) => {
            let served = ticket.requests.get().saturating_add(1);
            ticket.requests.set(served);
            (
                ticket.over_limit,
                served >= tracker.limits.requests_per_connection,
            )
        }
        None => (false, false),
    };
    if over_limit {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerBusy,
            format!(
                "too many open connections from this address (at most {}); reuse a connection or retry later",
                tracker.limits.per_address
            ),
        );
        error.retry_after_secs = Some(1);
        let mut response = actix_web::ResponseError::error_response(&error);
        close_after(&mut response);
        return Ok(request.into_response(response));
    }
    let (http_request, payload) = request.into_parts();
    let timed = timed_payload(payload, tracker.limits.body_read_timeout);
    let request = ServiceRequest::from_parts(http_request, timed);
    let mut response = next.call(request).await?.map_into_boxed_body();
    if last_request {
        close_after(response.response_mut());
    }
    Ok(response)
}

fn close_after(response: &mut actix_web::HttpResponse) {
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// `payload`, failing with a timeout when the next piece takes longer than `timeout`.
fn timed_payload(payload: Payload, timeout: Duration) -> Payload {
    let stream = futures_util::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        match tokio::time::timeout(timeout, payload.next()).await {
            Ok(Some(item)) => Some((item, Some(payload))),
            Ok(None) => None,
            Err(_) => Some((
                Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the request body sent nothing for {} s",
                        timeout.as_secs_f64()
                    ),
                ))),
                None,
            )),
        }
    });
    Payload::Stream {
        payload: Box::pin(stream),
    }
}

/// Reads a whole request body of at most `limit` bytes; beyond it, 413 naming `what`
/// and the limit. A body that breaks off is a 400.
pub(crate) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, ApiError> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::bad_request(
                ErrorCode::RequestFailed,
                format!("read request body: {error}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::RequestFailed,
                format!("{what} is larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
