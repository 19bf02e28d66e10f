//! The three calls setup and the config page make to CPA's management API
//! (server-core §3.7), each on its own short-lived HTTP/1.1 connection:
//! - A: `GET {base}/v0/management/config`, any 2xx proves URL and key;
//! - B: the same request, reading `usage-statistics-enabled` and
//!   `redis-usage-queue-retention-seconds`;
//! - C: `PUT {base}/v0/management/usage-statistics-enabled` `{"value":true}`.
//!
//! Price syncs read CPA's `proxy-url` from the same config ([`proxy_url`]).
//!
//! `https://` bases are verified against the system roots (rustls with ring).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::connection::CpaConnection;

/// CPA calls give up after this long (the Go server's client timeout).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to CPA failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// CPA answered with a non-2xx status; the status line, e.g. `401 Unauthorized`.
    Status(String),
    /// CPA could not be reached, or the exchange failed; Go-style text
    /// `Get "<url>": <cause>`.
    Transport(String),
    /// The body is not what CPA sends (call B needs a JSON object).
    Body(String),
}

/// What call B reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpaUsage {
    /// CPA's `usage-statistics-enabled` switch.
    pub usage_statistics_enabled: bool,
    /// How long CPA keeps queued usage events.
    pub retention_seconds: i64,
    /// CPA did not report a usable retention; 60 s (CPA's default) is assumed.
    pub retention_source_default: bool,
}

impl CpaUsage {
    /// The figures as `/setup` and `/usage-service/*` answer them.
    pub fn to_json(self) -> Value {
        serde_json::json!({
            "usageStatisticsEnabled": self.usage_statistics_enabled,
            "redisUsageQueueRetentionSeconds": self.retention_seconds,
            "retentionSourceDefault": self.retention_source_default,
        })
    }
}

/// Call A: `GET /v0/management/config`; any 2xx answer proves that the URL reaches
/// CPA and that CPA accepts the management key.
///
/// # Errors
///
/// [`CallError`] when CPA cannot be reached, refuses the key or answers otherwise.
pub async fn validate(connection: &CpaConnection) -> Result<(), CallError> {
    call(connection, Method::GET, "/v0/management/config", None)
        .await
        .map(|_| ())
}

/// Call B: CPA's config again, read for the usage settings cpamp depends on (whether
/// usage publishing is on, and how long CPA keeps queued events).
///
/// # Errors
///
/// [`CallError`] as for [`validate`], or when the answer is not a JSON object.
pub async fn usage_settings(connection: &CpaConnection) -> Result<CpaUsage, CallError> {
    let body = call(connection, Method::GET, "/v0/management/config", None).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|error| CallError::Body(format!("decode CPA config: {error}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| CallError::Body("decode CPA config: not a JSON object".to_string()))?;
    Ok(parse_usage(object))
}

/// CPA's own outgoing proxy (`proxy-url` of its config), for price syncs; `None` when
/// CPA does not answer within `timeout` or sets none.
pub async fn proxy_url(connection: &CpaConnection, timeout: Duration) -> Option<String> {
    let body = tokio::time::timeout(
        timeout,
        call(connection, Method::GET, "/v0/management/config", None),
    )
    .await
    .ok()?
    .ok()?;
    let value: Value = serde_json::from_slice(&body).ok()?;
    let proxy = value.get("proxy-url")?.as_str()?.trim();
    (!proxy.is_empty()).then(|| proxy.to_string())
}

/// Call C: `PUT /v0/management/usage-statistics-enabled` with `{"value":true}`, which
/// makes CPA publish usage events for cpamp to collect.
///
/// # Errors
///
/// [`CallError`] when CPA cannot be reached, refuses the key or the change.
pub async fn enable_usage_statistics(connection: &CpaConnection) -> Result<(), CallError> {
    call(
        connection,
        Method::PUT,
        "/v0/management/usage-statistics-enabled",
        Some(Bytes::from_static(br#"{"value":true}"#)),
    )
    .await
    .map(|_| ())
}

fn parse_usage(object: &serde_json::Map<String, Value>) -> CpaUsage {
    let mut enabled = false;
    for name in ["usage-statistics-enabled", "usageStatisticsEnabled"] {
        match object.get(name) {
            Some(Value::Bool(value)) => {
                enabled = *value;
                break;
            }
            Some(Value::String(text)) => {
                enabled = matches!(
                    text.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                );
                break;
            }
            _ => {}
        }
    }
    let mut retention = None;
    for name in [
        "redis-usage-queue-retention-seconds",
        "redisUsageQueueRetentionSeconds",
    ] {
        match object.get(name) {
            Some(Value::Number(number)) => {
                retention = number
                    .as_i64()
                    .or_else(|| number.as_f64().map(|value| value.trunc() as i64));
                break;
            }
            Some(Value::String(text)) => {
                retention = text.trim().parse::<i64>().ok();
                break;
            }
            _ => {}
        }
    }
    CpaUsage {
        usage_statistics_enabled: enabled,
        retention_seconds: retention.unwrap_or(60),
        retention_source_default: retention.is_none(),
    }
}

async fn call(
    connection: &CpaConnection,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<Bytes, CallError> {
    let url = format!("{}{}", connection.base_url, path);
    let verb = if method == Method::GET { "Get" } else { "Put" };
    let transport = |cause: String| CallError::Transport(format!("{verb} \"{url}\": {cause}"));
    let exchange = exchange(&url, connection, method, body);
    match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Err(_) => Err(transport(
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                .to_string(),
        )),
        Ok(Err(cause)) => Err(transport(cause)),
        Ok(Ok((status, body))) if status.is_success() => Ok(body),
        Ok(Ok((status, _))) => Err(CallError::Status(
            format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            )
            .trim_end()
            .to_string(),
        )),
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn exchange(
    url: &str,
    connection: &CpaConnection,
    method: Method,
    body: Option<Bytes>,
) -> Result<(http::StatusCode, Bytes), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|error| format!("invalid URL: {error}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => {
            return Err(format!(
                "unsupported protocol scheme {:?}",
                other.unwrap_or("")
            ));
        }
    };
    let host = uri
        .host()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| "no host in request URL".to_string())?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|authority| authority.as_str().to_string())
        .unwrap_or_default();
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| format!("dial tcp {host}:{port}: {error}"))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if tls {
        let config = tls_config()?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|error| format!("invalid TLS server name {host:?}: {error}"))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|error| format!("tls: {error}"))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (mut sender, driver) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|error| error.to_string())?;
    tokio::spawn(async move {
        let _ = driver.await;
    });
    let path = uri
        .path_and_query()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let mut authorization =
        http::HeaderValue::from_str(&format!("Bearer {}", connection.management_key.expose()))
            .map_err(|_| {
                "the CPA Management Key contains characters not allowed in a header".to_string()
            })?;
    authorization.set_sensitive(true);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, authorization)
        .header(
            header::USER_AGENT,
            concat!("cpamp/", env!("CARGO_PKG_VERSION")),
        );
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("read response body: {error}"))?
        .to_bytes();
    Ok((status, body))
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            for certificate in rustls_native_certs::load_native_certs().certs {
                // One unparsable system certificate must not disable TLS altogether.
                let _ = roots.add(certificate);
            }
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
                })
                .map_err(|error| format!("tls setup: {error}"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(value: Value) -> CpaUsage {
        parse_usage(value.as_object().expect("object"))
    }

    #[test]
    fn cpa_usage_fields_are_read_like_the_go_server() {
        assert_eq!(
            usage(
                serde_json::json!({"usage-statistics-enabled": true, "redis-usage-queue-retention-seconds": 120})
            ),
            CpaUsage {
                usage_statistics_enabled: true,
                retention_seconds: 120,
                retention_source_default: false
            }
        );
        assert_eq!(
            usage(
                serde_json::json!({"usageStatisticsEnabled": "On", "redisUsageQueueRetentionSeconds": " 30 "})
            ),
            CpaUsage {
                usage_statistics_enabled: true,
                retention_seconds: 30,
                retention_source_default: false
            }
        );
        assert_eq!(
            usage(serde_json::json!({"redis-usage-queue-retention-seconds": null})),
            CpaUsage {
                usage_statistics_enabled: false,
                retention_seconds: 60,
                retention_source_default: true
            }
        );
        assert_eq!(
            usage(serde_json::json!({"redis-usage-queue-retention-seconds": 0})).retention_seconds,
            0
        );
    }
}
