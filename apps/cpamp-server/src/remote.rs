//! Talking to the running server from the command line (`doctor`, `export`,
//! `import`, `backup` while the server holds the database lock): where it
//! listens, which admin key to send, and HTTP requests with streamed bodies.

use std::time::Duration;

use bytes::Bytes;
use cpamp_api::cpa_http;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::config::Settings;

/// The running server's base URL: `--server-url`, else `HTTP_ADDR` with an
/// unspecified host replaced by loopback.
pub fn server_url(settings: &Settings, server_url: Option<String>) -> String {
    let url = server_url.unwrap_or_else(|| {
        let addr = settings.http_addr;
        let host = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        format!("http://{host}:{}", addr.port())
    });
    url.trim_end_matches('/').to_string()
}

/// `--admin-key`, else `CPA_MANAGER_ADMIN_KEY`; `what` names the command in the error.
pub fn admin_key(
    settings: &Settings,
    admin_key: Option<String>,
    what: &str,
) -> Result<String, String> {
    admin_key
        .filter(|key| !key.trim().is_empty())
        .or_else(|| {
            let seeded = settings.admin_key.expose();
            (!seeded.is_empty()).then(|| seeded.to_string())
        })
        .map(|key| key.trim().to_string())
        .ok_or_else(|| {
            format!(
                "the server is running (it holds the database lock), so {what} goes through its API; pass --admin-key <CPAMP Admin Key> (or set CPA_MANAGER_ADMIN_KEY)"
            )
        })
}

/// The running server, with the admin key for every request.
#[derive(Debug, Clone)]
pub struct Remote {
    pub base_url: String,
    key: String,
}

impl Remote {
    pub fn new(base_url: String, key: String) -> Remote {
        Remote { base_url, key }
    }

    /// Sends one request and returns the response with its body unread.
    pub async fn send(
        &self,
        method: http::Method,
        path_and_query: &str,
        body: Option<(Bytes, &str)>,
    ) -> Result<http::Response<Incoming>, String> {
        let url = format!("{}{path_and_query}", self.base_url);
        let target = cpa_http::Target::parse(&self.base_url)?;
        let io = cpa_http::dial(&target).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|error| format!("{method} {url}: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut authorization = http::HeaderValue::from_str(&format!("Bearer {}", self.key))
            .map_err(|_| "the admin key contains invalid characters".to_string())?;
        authorization.set_sensitive(true);
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path_and_query}", target.path))
            .header(http::header::HOST, target.host_header())
            .header(http::header::AUTHORIZATION, authorization);
        let body = match body {
            Some((bytes, content_type)) => {
                builder = builder.header(http::header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|error| format!("{method} {url}: {error}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("{method} {url}: {error}"))?;
        if response.status() == http::StatusCode::UNAUTHORIZED {
            return Err(format!(
                "{url} refused the admin key (401); pass the CPAMP Admin Key, not the CPA Management Key"
            ));
        }
        Ok(response)
    }

    /// Sends a request and reads a JSON answer (any status) within `timeout`.
    pub async fn json(
        &self,
        method: http::Method,
        path: &str,
        body: Option<(Bytes, &str)>,
        timeout: Duration,
    ) -> Result<(http::StatusCode, Value), String> {
        let work = async {
            let response = self.send(method.clone(), path, body).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|error| format!("{method} {path}: read answer: {error}"))?
                .to_bytes();
            let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&bytes).trim().to_string())
            });
            Ok((status, value))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("{method} {path}: no answer within {} s", timeout.as_secs()))?
    }
}

/// The `error` of an error answer, or the answer itself.
pub fn error_text(value: &Value) -> String {
    value
        .get("error")
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| value.to_string())
}
