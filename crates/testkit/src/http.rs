//! The HTTP side of the fake CPA: the management API routes a manager uses (usage queue,
//! publishing switch, config, auth files and their status, `api-call`, API keys),
//! `/healthz`, `/` and `/v1/models`, with CPA's key check, version headers and request
//! recording.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::{RecordedRequest, Shared};

pub(crate) async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if shared.options.record_requests {
        shared.record(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
        });
    }
    let path = parts.uri.path();
    let mut response = if parts.method == Method::OPTIONS {
        empty(StatusCode::NO_CONTENT)
    } else if path == "/healthz" {
        json_response(StatusCode::OK, &json!({"status": "ok"}))
    } else if path == "/" {
        json_response(
            StatusCode::OK,
            &json!({"message": "CLI Proxy API Server", "endpoints": ["POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models"]}),
        )
    } else if path == "/v1/models" || path == "/models" {
        let data: Vec<Value> = crate::events::ACCOUNTS
            .iter()
            .map(|account| json!({"id": account.model, "object": "model", "created": 1_767_225_600, "owned_by": account.provider}))
            .collect();
        json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
    } else if path == "/v0/resource/plugins" || path.starts_with("/v0/resource/plugins/") {
        // A plugin's page or API: answers what it received, so tests see what CPA got.
        plugin_echo(&parts, &body)
    } else if let Some(route) = path.strip_prefix("/v0/management/") {
        let mut response = management(
            &parts,
            route,
            &body,
            client_ip(&parts.headers, peer),
            &shared,
        )
        .await;
        if let Some(version) = &shared.options.version {
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(version) {
                headers.insert("x-cpa-version", value);
            }
            headers.insert("x-cpa-commit", HeaderValue::from_static("f4ce0c0"));
            headers.insert(
                "x-cpa-build-date",
                HeaderValue::from_static("2026-08-22T14:39:03Z"),
            );
        }
        response
    } else {
        empty(StatusCode::NOT_FOUND)
    };
    response
        .headers_mut()
        .insert("access-control-allow-origin", HeaderValue::from_static("*"));
    Ok(response)
}

async fn management(
    parts: &http::request::Parts,
    route: &str,
    body: &Bytes,
    ip: IpAddr,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    if let Err(failure) = shared.auth.check(ip, &presented_key(&parts.headers)) {
        let status = match failure {
            crate::auth::AuthFailure::Banned(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        return json_response(status, &json!({"error": failure.message()}));
    }
    let method = &parts.method;
    match (method, route) {
        (&Method::GET, "usage-queue") if shared.options.http_queue_supported => {
            let count = query_value(parts.uri.query(), "count");
            let count = match count.as_deref().map(str::trim) {
                None | Some("") => Some(1),
                Some(text) => text
                    .trim_start_matches('+')
                    .parse::<i64>()
                    .ok()
                    .filter(|count| *count > 0),
            };
            let Some(count) = count else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "count must be a positive integer"}),
                );
            };
            let items = shared
                .queue
                .pop(usize::try_from(count).unwrap_or(usize::MAX));
            // Items are stored JSON text, so the array is assembled from them verbatim.
            let mut out =
                Vec::with_capacity(items.iter().map(Bytes::len).sum::<usize>() + items.len() + 2);
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                if serde_json::from_slice::<&serde_json::value::RawValue>(item).is_ok() {
                    out.extend_from_slice(item);
                } else {
                    // CPA emits a stored non-JSON payload as a JSON string element.
                    let text =
                        serde_json::to_string(&String::from_utf8_lossy(item)).unwrap_or_default();
                    out.extend_from_slice(text.as_bytes());
                }
            }
            out.push(b']');
            raw_json(StatusCode::OK, Bytes::from(out))
        }
        (&Method::GET, "usage-statistics-enabled") => json_response(
            StatusCode::OK,
            &json!({"usage-statistics-enabled": shared.queue.publishing()}),
        ),
        (&Method::PUT | &Method::PATCH, "usage-statistics-enabled") => {
            match serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|value| value.get("value").and_then(Value::as_bool))
            {
                Some(enabled) => {
                    shared.queue.set_publishing(enabled);
                    // A successful PUT reloads CPA's config, which announces a refresh.
                    shared.queue.broadcast_refresh();
                    json_response(StatusCode::OK, &json!({"status": "ok"}))
                }
                None => json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid body"})),
            }
        }
        (&Method::GET, "config") => json_response(
            StatusCode::OK,
            &json!({
                "debug": false,
                "proxy-url": shared.options.proxy_url,
                "request-log": false,
                "usage-statistics-enabled": shared.queue.publishing(),
                "redis-usage-queue-retention-seconds": shared.queue.retention().as_secs(),
                "api-keys": ["sk-cpa-FAKE-team-alpha", "sk-cpa-FAKE-team-beta", "sk-cpa-FAKE-ci"],
            }),
        ),
        (&Method::GET, "api-keys") => json_response(
            StatusCode::OK,
            &json!({"api-keys": ["sk-cpa-FAKE-team-alpha", "sk-cpa-FAKE-team-beta", "sk-cpa-FAKE-ci"]}),
        ),
        (_, route) if route.starts_with("codex-team-invite") => plugin_echo(parts, body),
        (&Method::GET, "auth-files") => {
            let (delay, failure) = {
                let credentials = crate::lock(&shared.credentials);
                (credentials.list_delay, credentials.list_failure)
            };
            tokio::time::sleep(delay).await;
            if let Some(status) = failure {
                return json_response(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &json!({"error": "failed to list auth files"}),
                );
            }
            let name = query_value(parts.uri.query(), "name").unwrap_or_default();
            let index = query_value(parts.uri.query(), "auth_index").unwrap_or_default();
            let list = crate::lock(&shared.credentials).list(name.trim(), index.trim());
            json_response(StatusCode::OK, &list)
        }
        (&Method::PATCH, "auth-files/status") => {
            let result = crate::lock(&shared.credentials).patch_status(body);
            if result.is_ok() {
                // CPA reloads the credential, which announces a refresh to subscribers.
                shared.queue.broadcast_refresh();
            }
            reply(result)
        }
        (&Method::DELETE, "auth-files") => {
            let names: Vec<String> = query_values(parts.uri.query(), "name");
            let all = query_value(parts.uri.query(), "all")
                .is_some_and(|all| matches!(all.as_str(), "true" | "1" | "*"));
            let result = crate::lock(&shared.credentials).delete(&names, all);
            if result.is_ok() {
                shared.queue.broadcast_refresh();
            }
            reply(result)
        }
        (&Method::GET, "auth-files/download") => {
            let name = query_value(parts.uri.query(), "name").unwrap_or_default();
            reply(crate::lock(&shared.credentials).download(name.trim()))
        }
        (&Method::POST, "api-call") => {
            let answer = crate::lock(&shared.credentials).api_call(body);
            match answer {
                Ok(answer) => {
                    tokio::time::sleep(answer.delay).await;
                    json_response(StatusCode::OK, &crate::credentials::api_call_reply(&answer))
                }
                Err(failure) => reply(Err(failure)),
            }
        }
        _ => empty(StatusCode::NOT_FOUND),
    }
}

/// What a plugin (the fake's `codex-team-invite` management plugin, or any plugin
/// resource) received: method, path, its origin header, whether it got a credential, and
/// the JSON body.
fn plugin_echo(parts: &http::request::Parts, body: &Bytes) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    json_response(
        StatusCode::OK,
        &json!({
            "plugin": parts.uri.path(),
            "method": parts.method.as_str(),
            "inviteOrigin": header("x-codex-invite-origin"),
            "authorization": header("authorization").map(|value| value.split(' ').next().unwrap_or_default().to_string()),
            "body": serde_json::from_slice::<Value>(body).unwrap_or(Value::Null),
        }),
    )
}

/// CPA reads `Authorization: Bearer <key>` (scheme case-insensitive, key not trimmed; any
/// other form uses the whole value), then `X-Management-Key`.
fn presented_key(headers: &http::HeaderMap) -> String {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    if !authorization.is_empty() {
        return match authorization.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.to_string(),
            _ => authorization,
        };
    }
    headers
        .get("x-management-key")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// gin's default `ClientIP()`: the left-most `X-Forwarded-For` entry when every entry is an
/// IP, else `X-Real-IP`, else the TCP peer.
fn client_ip(headers: &http::HeaderMap, peer: SocketAddr) -> IpAddr {
    if let Some(forwarded) = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
    {
        let parsed: Option<Vec<IpAddr>> = forwarded
            .split(',')
            .map(|part| part.trim().parse::<IpAddr>().ok())
            .collect();
        if let Some(first) = parsed.and_then(|ips| ips.first().copied()) {
            return first;
        }
    }
    if let Some(real) = headers
        .get("x-real-ip")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
    {
        return real;
    }
    peer.ip()
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query_values(query, name).into_iter().next()
}

/// Every value of a query parameter, percent-decoded.
fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A credential call's result as CPA answers it: the JSON body, or `{"error": …}`.
fn reply(result: Result<Value, crate::credentials::Failure>) -> Response<Full<Bytes>> {
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err((status, message)) => json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &json!({"error": message}),
        ),
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    raw_json(status, Bytes::from(value.to_string()))
}

fn raw_json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
