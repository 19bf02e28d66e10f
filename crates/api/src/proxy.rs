//! The CPA proxy (server-core §6): every `/v0/management/*` path cpamp does not serve
//! itself goes to CPA with the saved CPA Management Key in place of the admin key, and
//! `GET /v1/models` / `/models` go to CPA with the caller's own credential.
//!
//! It is registered as the application's default service, so every local route (exact
//! or prefix) wins, whoever registers it and in whatever order.
//!
//! Rules:
//! - Deny by default: a management request is forwarded only after the admin key was
//!   verified, and the CPA key is attached only then. (The Go server forwarded the
//!   caller's credential to "plugin" paths when admin auth failed; cpamp does not.)
//! - The admin key never reaches CPA: every forwarded header, cookie and query parameter
//!   passes the admin-key screen (`screen.rs`) first, whatever the path and credential.
//! - Bodies stream both ways; hop-by-hop headers and the `X-CPAMP-Auth-File-*`
//!   bookkeeping headers are dropped; `X-Forwarded-For` gets the client address; CPA's
//!   CORS headers are dropped from answers.
//! - Dialling CPA times out after 10 s; an established exchange has no overall timeout,
//!   so long streams work.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyStream, Either, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;

use crate::auth::AdminAuth;
use crate::cpa_http::{self, Target};
use crate::error::{ApiError, ErrorCode};
use crate::screen;
use crate::state::{AppState, Store};

/// Request headers never forwarded (hop-by-hop, RFC 9110 §7.6.1, plus cpamp's own).
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "x-cpamp-auth-file-physical-name",
    "x-cpamp-auth-file-delete-identities",
    "x-cpamp-auth-file-mutation-identity",
    "x-cpamp-auth-file-write-identities",
    "x-cpamp-auth-file-write-content-sha256",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// Response headers never copied back: hop-by-hop ones, and CPA's own CORS headers
/// (CPA allows every origin; cpamp's `USAGE_CORS_ORIGINS` alone decides, see
/// `middleware::cors`).
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
];

/// Registers the proxy as the default service (after every local route).
pub fn configure<S: Store>(config: &mut web::ServiceConfig) {
    config.default_service(web::to(dispatch::<S>));
}

/// How the upstream request is authorised.
pub(crate) enum Credential {
    /// Replace `Authorization` with the saved CPA Management Key.
    Management(String),
    /// Forward the caller's `Authorization` unless the screen finds the admin key in it
    /// (`/v1/models`: a CPA API key is what CPA expects there).
    ClientKey,
    /// Forward no `Authorization` at all.
    None,
}

async fn dispatch<S: Store>(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let path = forwardable_path(request.path())?;
    if path.starts_with("/v0/management/") {
        // Admin first: nothing about the CPA connection is read for an unauthenticated
        // caller.
        AdminAuth::from_request(&request, &mut Payload::None).await?;
        let connection = crate::connection::resolve(&state)
            .await?
            .ok_or_else(ApiError::not_configured)?;
        let key = connection.management_key.expose().to_string();
        // Auth-file status changes and deletes are serialised with account automation
        // and end its claims on the credential.
        if crate::plugins::is_management_plugin_path(&path) {
            return crate::plugins::forward(
                &request,
                payload,
                &connection.base_url,
                Credential::Management(key),
            )
            .await;
        }
        if let Some(kind) = crate::automation::bookkeeping::classify(request.method(), &path) {
            return crate::automation::bookkeeping::forward(
                kind,
                &request,
                payload,
                &state,
                &connection.base_url,
                key,
            )
            .await;
        }
        return forward(
            &request,
            ForwardBody::Stream(payload),
            &connection.base_url,
            Credential::Management(key),
            &[],
        )
        .await;
    }
    if matches!(
        path.as_str(),
        "/v1/models" | "/v1/models/" | "/models" | "/models/"
    ) {
        if request.method() != actix_web::http::Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        let connection = crate::connection::resolve(&state)
            .await?
            .ok_or_else(ApiError::not_configured)?;
        return forward(
            &request,
            ForwardBody::Stream(payload),
            &connection.base_url,
            Credential::ClientKey,
            &[],
        )
        .await;
    }
    if crate::plugins::is_resource_path(&path) {
        return crate::plugins::resource(&request, payload, &state).await;
    }
    Ok(HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("404 page not found\n"))
}

fn unreachable(base_url: &str, cause: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::RequestFailed,
        format!(
            "CPA at {base_url} is unreachable: {cause}; run `cpamp-server doctor` or see /status"
        ),
    )
}

/// What is sent upstream: the caller's body as it streams in, or a body cpamp read (and
/// perhaps rewrote), which is sent with its own `Content-Length`.
pub(crate) enum ForwardBody {
    Stream(web::Payload),
    Bytes(Bytes),
}

type ProxyBody = Either<
    Empty<Bytes>,
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>,
>;

/// Forwards `request` to CPA; `overrides` (lower-case names) replace request headers.
pub(crate) async fn forward(
    request: &HttpRequest,
    body: ForwardBody,
    base_url: &str,
    credential: Credential,
    overrides: &[(&str, String)],
) -> Result<HttpResponse, ApiError> {
    let path = forwardable_path(request.path())?;
    let target = Target::parse(base_url).map_err(|error| unreachable(base_url, &error))?;
    let authenticator = request.app_data::<web::Data<crate::auth::AdminAuthenticator>>();
    let remembered =
        |token: &str| authenticator.is_some_and(|authenticator| authenticator.is_remembered(token));
    let query = request
        .uri()
        .query()
        .and_then(|query| screen::screen_query(query, &remembered));
    let path_and_query = match query {
        Some(query) => format!("{}{path}?{query}", target.path),
        None => format!("{}{path}", target.path),
    };
    // The caller's `Authorization` goes on only as a client key (and then only when the
    // screen below lets it through).
    let drop_authorization = !matches!(credential, Credential::ClientKey);
    let mut builder = http::Request::builder()
        .method(request.method().as_str())
        .uri(path_and_query)
        .header(http::header::HOST, target.host_header());
    // `Connection` may name further hop-by-hop headers.
    let listed: Vec<String> = request
        .headers()
        .get_all(actix_web::http::header::CONNECTION)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in request.headers() {
        let lower = name.as_str();
        if DROPPED_REQUEST_HEADERS.contains(&lower) || listed.iter().any(|item| item == lower) {
            continue;
        }
        if lower == "authorization" && drop_authorization {
            continue;
        }
        if overrides.iter().any(|(name, _)| *name == lower)
            || (lower == "content-length" && matches!(body, ForwardBody::Bytes(_)))
        {
            continue;
        }
        // The admin key never leaves cpamp, whichever header carries it.
        let text = String::from_utf8_lossy(value.as_bytes());
        if lower == "cookie" {
            if let Some(kept) = screen::screen_cookies(&text, &remembered) {
                builder = builder.header(name.as_str(), kept);
            }
            continue;
        }
        if screen::may_hold_admin_key(&text, &remembered) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    if let Credential::Management(key) = &credential {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            unreachable(
                base_url,
                "the saved CPA Management Key is not a valid header",
            )
        })?;
        value.set_sensitive(true);
        builder = builder.header(http::header::AUTHORIZATION, value);
    }
    if let Some(client) = crate::auth::client_address(request) {
        builder = builder.header("x-forwarded-for", client.to_string());
    }
    for (name, value) in overrides {
        builder = builder.header(*name, value.as_str());
    }
    let body: ProxyBody = match body {
        ForwardBody::Bytes(bytes) if bytes.is_empty() => {
            builder = builder.header(http::header::CONTENT_LENGTH, 0);
            Either::Left(Empty::new())
        }
        ForwardBody::Bytes(bytes) => {
            builder = builder.header(http::header::CONTENT_LENGTH, bytes.len());
            let frame = futures_util::stream::once(async move { Ok(Frame::data(bytes)) });
            Either::Right(StreamBody::new(frame.boxed()))
        }
        ForwardBody::Stream(payload) => {
            let has_body = request
                .headers()
                .get(actix_web::http::header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .is_some_and(|length| length > 0)
                || request
                    .headers()
                    .get(actix_web::http::header::TRANSFER_ENCODING)
                    .is_some();
            if has_body {
                // The actix payload is not `Send`; it is pumped into a channel from this
                // worker's thread so the hyper connection task only sees `Send` parts.
                let (sender, receiver) =
                    tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
                actix_web::rt::spawn(pump(payload, sender));
                let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                    receiver.recv().await.map(|item| (item, receiver))
                });
                Either::Right(StreamBody::new(stream.boxed()))
            } else {
                Either::Left(Empty::new())
            }
        }
    };
    let upstream = builder
        .body(body)
        .map_err(|error| unreachable(base_url, &error.to_string()))?;

    let io = cpa_http::dial(&target)
        .await
        .map_err(|error| unreachable(base_url, &error))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|error| unreachable(base_url, &error.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "CPA proxy connection ended");
        }
    });
    let response = sender
        .send_request(upstream)
        .await
        .map_err(|error| unreachable(base_url, &error.to_string()))?;
    let (parts, incoming) = response.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut reply = HttpResponse::build(status);
    let listed: Vec<String> = parts
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in &parts.headers {
        let lower = name.as_str();
        if DROPPED_RESPONSE_HEADERS.contains(&lower) || listed.iter().any(|item| item == lower) {
            continue;
        }
        reply.append_header((name.as_str(), value.as_bytes()));
    }
    let stream = BodyStream::new(incoming)
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
        .map_err(std::io::Error::other);
    Ok(reply.streaming(stream))
}

/// The path to forward: `raw` (as received, still percent-encoded) with repeated slashes
/// collapsed; 400 when a segment is a dot segment (also percent-encoded) or holds an
/// encoded `/`, `\\` or NUL, or bytes that are not UTF-8 once decoded (overlong forms
/// such as `%c0%ae` for `.`), which CPA or a server behind it could resolve to another
/// path than the one cpamp authorised.
pub(crate) fn forwardable_path(raw: &str) -> Result<String, ApiError> {
    let mut path = String::with_capacity(raw.len());
    for (index, segment) in raw.split('/').enumerate() {
        let decoded = crate::percent::decode(segment);
        let refused = decoded == b"."
            || decoded == b".."
            || decoded.contains(&b'/')
            || decoded.contains(&b'\\')
            || decoded.contains(&0)
            || std::str::from_utf8(&decoded).is_err();
        if refused {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!(
                    "path {raw:?} has a dot segment, an encoded slash or NUL, or bytes that are \
                     not UTF-8; cpamp forwards only resolved paths: send the path without \".\", \
                     \"..\", %2e, %2f, %5c, %00 or overlong (%c0%ae) segments"
                ),
            ));
        }
        if index > 0 && segment.is_empty() {
            continue;
        }
        if index > 0 {
            path.push('/');
        }
        path.push_str(segment);
    }
    if raw.len() > 1 && raw.ends_with('/') {
        path.push('/');
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// Copies the client's request body into the upstream channel.
async fn pump(
    mut payload: web::Payload,
    sender: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) {
    while let Some(chunk) = payload.next().await {
        let item = chunk
            .map(Frame::data)
            .map_err(|error| std::io::Error::other(error.to_string()));
        let failed = item.is_err();
        if sender.send(item).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_dot_segments_refused() {
        assert_eq!(
            forwardable_path("/v0/management/config").expect("plain"),
            "/v0/management/config"
        );
        assert_eq!(
            forwardable_path("/v0//management///auth-files/").expect("slashes"),
            "/v0/management/auth-files/"
        );
        assert_eq!(forwardable_path("/models/").expect("models"), "/models/");
        assert_eq!(
            forwardable_path("/v0/management/a%20b.json").expect("encoded"),
            "/v0/management/a%20b.json"
        );
        for bad in [
            "/v0/management/../../etc/passwd",
            "/v0/management/./config",
            "/v0/management/%2e%2e/%2E%2E/etc/passwd",
            "/v0/management/.%2e/x",
            "/v0/management/%2e/x",
            "/v0/management/a%2fb",
            "/v0/management/a%5C..",
            "/v0/management/..",
            "/v0/management/%c0%ae%c0%ae/config",
            "/v0/management/config%00.json",
            "/v0/management/%ff",
        ] {
            let error = forwardable_path(bad).expect_err(bad);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn the_unreachable_error_names_the_url_and_the_doctor() {
        let error = unreachable(
            "http://127.0.0.1:8317",
            "dial tcp 127.0.0.1:8317: connection refused",
        );
        assert_eq!(error.status, StatusCode::BAD_GATEWAY);
        assert_eq!(error.code, ErrorCode::RequestFailed);
        assert_eq!(
            error.message,
            "CPA at http://127.0.0.1:8317 is unreachable: dial tcp 127.0.0.1:8317: connection refused; run `cpamp-server doctor` or see /status"
        );
    }
}
