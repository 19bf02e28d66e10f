//! The HTTP queue transport: `GET {cpa}/v0/management/usage-queue?count=N` with the
//! management key as a Bearer token, over one kept-alive HTTP/1.1 connection (hyper).
//!
//! Unlike the Go manager, a response element that cannot be a payload (a number, boolean
//! or array) becomes a dead letter on its own instead of failing the whole batch, and a
//! body that is not a JSON array is kept as one dead letter: the items were already
//! removed from CPA, so dropping them would lose data.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use serde_json::value::RawValue;

use crate::holding::Tap;
use crate::inbox::ResponseFormat;
use crate::resp::dial;
use crate::settings::{CollectorSettings, Endpoint};
use crate::source::{ErrorKind, RawBatch, RawItem, SourceError, Stage, Transport, UsageSource};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A small HTTP/1.1 client for CPA's management API, reconnecting after errors.
pub(crate) struct ManagementClient {
    endpoint: Result<Endpoint, String>,
    authorization: Option<http::HeaderValue>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

/// A response: status line and the whole body.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub status_line: String,
    pub body: Bytes,
}

impl ManagementClient {
    pub(crate) fn new(settings: &CollectorSettings) -> ManagementClient {
        let key = settings.management_key.expose();
        let authorization = if key.is_empty() {
            None
        } else {
            http::HeaderValue::from_str(&format!("Bearer {key}"))
                .ok()
                .map(|mut value| {
                    value.set_sensitive(true);
                    value
                })
        };
        ManagementClient {
            endpoint: Endpoint::parse(&settings.upstream, None),
            authorization,
            sender: None,
        }
    }

    /// GET `path_and_query` below the upstream's path prefix.
    pub(crate) async fn get(&mut self, path_and_query: &str) -> Result<Reply, String> {
        self.get_tapped(path_and_query, None).await
    }

    /// GET, handing the bytes of a successful response's body to `tap` as they arrive.
    pub(crate) async fn get_tapped(
        &mut self,
        path_and_query: &str,
        tap: Option<&Tap>,
    ) -> Result<Reply, String> {
        let endpoint = self.endpoint.clone()?;
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.get_inner(&endpoint, path_and_query, tap),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => {
                self.sender = None;
                Err(error)
            }
            Err(_) => {
                self.sender = None;
                Err(format!(
                    "GET {path_and_query}: timeout after {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            }
        }
    }

    async fn get_inner(
        &mut self,
        endpoint: &Endpoint,
        path_and_query: &str,
        tap: Option<&Tap>,
    ) -> Result<Reply, String> {
        let ready = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            // HTTPS is verified normally; `tlsSkipVerify` applies to RESP only.
            let stream = dial(endpoint, false).await?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|error| format!("http handshake: {error}"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err("not connected".to_string());
        };
        let mut request = Request::get(format!("{}{}", endpoint.path, path_and_query))
            .header(header::HOST, endpoint.authority())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("cpamp/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("GET {path_and_query}: {error}"))?;
        let status = response.status();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|reason| String::from_utf8_lossy(reason.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let status_line = format!("{} {}", status.as_u16(), reason)
            .trim_end()
            .to_string();
        // Only a successful response carries popped items; its bytes go to the tap as each
        // chunk arrives, so a kill while the rest is on its way loses only the rest.
        let tap = tap.filter(|_| status.is_success());
        let mut body = response.into_body();
        let mut bytes = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| format!("read response body: {error}"))?;
            if let Ok(data) = frame.into_data() {
                if let Some(tap) = tap {
                    tap.received(ResponseFormat::HttpQueue, &data);
                }
                bytes.extend_from_slice(&data);
            }
        }
        let body = bytes.freeze();
        Ok(Reply {
            status,
            status_line,
            body,
        })
    }
}

/// The HTTP usage-queue source.
pub struct HttpQueue {
    client: ManagementClient,
    tap: Tap,
}

impl HttpQueue {
    /// A source that pops CPA's HTTP usage queue (`GET /v0/management/usage-queue`) at the
    /// settings' upstream with their management key.
    pub fn new(settings: &CollectorSettings) -> HttpQueue {
        HttpQueue {
            client: ManagementClient::new(settings),
            tap: Tap::default(),
        }
    }

    /// The same source, writing each response's bytes to `tap` as they arrive.
    pub(crate) fn with_tap(mut self, tap: Tap) -> HttpQueue {
        self.tap = tap;
        self
    }
}

impl UsageSource for HttpQueue {
    fn transport(&self) -> Transport {
        Transport::Http
    }

    async fn next_batch(&mut self, max_items: u32) -> Result<RawBatch, SourceError> {
        let path = format!("/v0/management/usage-queue?count={}", max_items.max(1));
        let reply = self
            .client
            .get_tapped(&path, Some(&self.tap))
            .await
            .map_err(|error| SourceError::new(Stage::Http, error))?;
        check_status(&reply)?;
        Ok(parse_queue_body(&reply.body))
    }
}

/// Maps a non-2xx reply to the error the run loop acts on.
pub(crate) fn check_status(reply: &Reply) -> Result<(), SourceError> {
    let status = reply.status;
    if status.is_success() {
        return Ok(());
    }
    if matches!(status.as_u16(), 404 | 405 | 501) {
        return Err(SourceError::new(
            Stage::Http,
            format!("http usage queue is unsupported: {}", reply.status_line),
        )
        .with_kind(ErrorKind::Unsupported));
    }
    let body = String::from_utf8_lossy(&reply.body[..reply.body.len().min(1024)])
        .trim()
        .to_string();
    let mut message = format!("usage queue request failed: {}", reply.status_line);
    if !body.is_empty() {
        message.push_str(": ");
        message.push_str(&body);
    }
    if status == StatusCode::UNAUTHORIZED {
        // A wrong key: every further request is one more failed login towards CPA's ban.
        return Err(SourceError::new(Stage::Auth, message).with_kind(ErrorKind::AuthRejected));
    }
    if status == StatusCode::FORBIDDEN {
        return Err(SourceError::new(Stage::Auth, message));
    }
    Err(SourceError::new(Stage::Http, message))
}

/// Splits a usage-queue body into items: strings unwrapped one level, every other element
/// (objects, `null`, numbers, arrays) as its raw JSON text. The decoder then judges each
/// item exactly as it judges the same bytes from a RESP pop or a subscription, so a
/// malformed item (`null` included) gets the same outcome in every transport.
pub(crate) fn parse_queue_body(body: &[u8]) -> RawBatch {
    let mut stream =
        serde_json::Deserializer::from_slice(body).into_iter::<Option<Vec<&RawValue>>>();
    let elements = match stream.next() {
        None | Some(Ok(None)) => return Vec::new(),
        Some(Ok(Some(elements))) => elements,
        Some(Err(error)) => {
            let raw = String::from_utf8_lossy(body).into_owned();
            if raw.trim().is_empty() {
                return Vec::new();
            }
            return vec![RawItem::Invalid {
                raw,
                reason: format!("usage queue response is not a JSON array: {error}"),
            }];
        }
    };
    elements
        .into_iter()
        .map(|element| element_item(element.get()))
        .collect()
}

/// One element of the array: a string unwrapped one level, anything else as its raw text.
fn element_item(text: &str) -> RawItem {
    match text.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<String>(text) {
            Ok(inner) => RawItem::Payload(Bytes::from(inner)),
            Err(error) => RawItem::Invalid {
                raw: text.to_string(),
                reason: error.to_string(),
            },
        },
        _ => RawItem::Payload(Bytes::copy_from_slice(text.as_bytes())),
    }
}

/// The items of the first bytes of a usage-queue body (a response cut short by a crash),
/// as [`parse_queue_body`] would have split them, and whether the body is whole. An
/// element counts only once it is followed by `,` or `]`, or cannot be longer than it is
/// (an object, array or string); a number at the very end may have lost digits and is
/// left out.
pub(crate) fn recover_queue_body(body: &[u8]) -> (RawBatch, bool) {
    if serde_json::from_slice::<&RawValue>(body).is_ok() {
        return (parse_queue_body(body), true);
    }
    let start = body
        .iter()
        .position(|byte| !byte.is_ascii_whitespace())
        .unwrap_or(body.len());
    match body.get(start) {
        None => return (Vec::new(), false),
        Some(b'[') => {}
        Some(_) => {
            return (
                vec![RawItem::Invalid {
                    raw: String::from_utf8_lossy(body).into_owned(),
                    reason: "usage queue response is not a JSON array (cut short)".to_string(),
                }],
                false,
            );
        }
    }
    let mut items = Vec::new();
    let mut at = start + 1;
    loop {
        while body.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let mut stream = serde_json::Deserializer::from_slice(&body[at..]).into_iter::<&RawValue>();
        let Some(Ok(element)) = stream.next() else {
            break;
        };
        let text = element.get();
        let mut end = at + stream.byte_offset();
        while body.get(end).is_some_and(u8::is_ascii_whitespace) {
            end += 1;
        }
        match body.get(end) {
            Some(b',') => {
                items.push(element_item(text));
                at = end + 1;
            }
            Some(_) => {
                items.push(element_item(text));
                break;
            }
            None => {
                if !matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
                    items.push(element_item(text));
                }
                break;
            }
        }
    }
    (items, false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn body_elements_are_split_without_losing_any() {
        let body = br#"[{"a":1}, "{\"b\":2}", null, "  ", 7, [1], "\"nested\""]"#;
        let items = parse_queue_body(body);
        let payload = |text: &'static str| RawItem::Payload(Bytes::from_static(text.as_bytes()));
        // Every element reaches the decoder as the bytes a RESP pop would carry.
        assert_eq!(
            items,
            [
                payload(r#"{"a":1}"#),
                payload(r#"{"b":2}"#),
                payload("null"),
                payload("  "),
                payload("7"),
                payload("[1]"),
                // One level of unwrapping only: the inner text stays a JSON string literal.
                payload(r#""nested""#),
            ]
        );
    }

    #[test]
    fn null_and_empty_bodies_are_empty_batches_and_garbage_is_kept() {
        assert!(parse_queue_body(b"null").is_empty());
        assert!(parse_queue_body(b"[]").is_empty());
        let kept = parse_queue_body(b"<html>oops</html>");
        assert!(matches!(&kept[..], [RawItem::Invalid { raw, .. }] if raw == "<html>oops</html>"));
    }

    #[test]
    fn status_mapping() {
        let reply = |code: u16, body: &'static str| Reply {
            status: StatusCode::from_u16(code).unwrap(),
            status_line: format!(
                "{code} {}",
                StatusCode::from_u16(code)
                    .unwrap()
                    .canonical_reason()
                    .unwrap()
            ),
            body: Bytes::from_static(body.as_bytes()),
        };
        let error = check_status(&reply(404, "")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "http: http usage queue is unsupported: 404 Not Found"
        );
        assert_eq!(error.kind, ErrorKind::Unsupported);
        let error = check_status(&reply(502, " upstream down \n")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "http: usage queue request failed: 502 Bad Gateway: upstream down"
        );
        let error = check_status(&reply(401, r#"{"error":"invalid management key"}"#)).unwrap_err();
        assert_eq!(error.kind, ErrorKind::AuthRejected);
        assert!(
            error
                .to_string()
                .starts_with("auth: usage queue request failed: 401 Unauthorized")
        );
    }
}
