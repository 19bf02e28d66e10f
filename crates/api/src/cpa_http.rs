//! Connections from this server to CPA: dialling (plain TCP or TLS with the system roots,
//! 10 s connect timeout) and small request helpers used by the doctor and the proxy.
//!
//! Each exchange uses its own HTTP/1.1 connection. The management surface is low-volume,
//! and a fresh connection per request means a CPA restart never leaves a stale pooled
//! socket behind.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long dialling (TCP connect plus TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream to CPA (plain or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where a CPA base URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://`: TLS with certificate checks.
    pub tls: bool,
    /// Host without IPv6 brackets.
    pub host: String,
    /// The port (the scheme's default when the URL names none).
    pub port: u16,
    /// Path prefix of the base URL (empty or starting with `/`, no trailing `/`).
    pub path: String,
}

impl Target {
    /// Parses an `http://` or `https://` base URL; the error says what is wrong with it.
    pub fn parse(base_url: &str) -> Result<Target, String> {
        let uri: http::Uri = base_url
            .trim()
            .parse()
            .map_err(|_| format!("invalid CPA URL {base_url:?}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("unsupported CPA URL scheme {other:?}")),
            None => return Err(format!("invalid CPA URL {base_url:?}")),
        };
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("invalid CPA URL {base_url:?}"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            tls,
            host,
            port,
            path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// `host[:port]` for the `Host` header (default ports omitted, IPv6 in brackets).
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// True for `localhost` and loopback addresses: inside a container these mean the
    /// container itself, not the host.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in rustls_native_certs::load_native_certs().certs {
                // One unparsable system certificate must not disable TLS altogether.
                let _ = roots.add(certificate);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    builder
                        .with_root_certificates(roots.clone())
                        .with_no_client_auth()
                })
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth()
                });
            Arc::new(config)
        })
        .clone()
}

/// Opens a connection to the target, TLS included, within [`CONNECT_TIMEOUT`].
pub async fn dial(target: &Target) -> Result<Box<dyn Io>, String> {
    let authority = format!("{}:{}", target.host, target.port);
    let connect = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|error| format!("dial tcp {authority}: {error}"))?;
        let _ = tcp.set_nodelay(true);
        if !target.tls {
            return Ok(Box::new(tcp) as Box<dyn Io>);
        }
        tls(Box::new(tcp), &target.host).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(result) => result,
        Err(_) => Err(format!("dial tcp {authority}: i/o timeout")),
    }
}

/// Starts TLS with `host` over an open stream (a direct connection or a proxy tunnel),
/// verifying its certificate against the system roots.
pub async fn tls(stream: Box<dyn Io>, host: &str) -> Result<Box<dyn Io>, String> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|error| format!("invalid TLS server name {host:?}: {error}"))?;
    let tls = tokio_rustls::TlsConnector::from(tls_config())
        .connect(name, stream)
        .await
        .map_err(|error| format!("tls handshake with {host}: {error}"))?;
    Ok(Box::new(tls) as Box<dyn Io>)
}

/// A complete response from CPA.
#[derive(Debug, Clone)]
pub struct Reply {
    /// CPA's status code.
    pub status: StatusCode,
    /// CPA's response headers.
    pub headers: HeaderMap,
    /// The whole response body.
    pub body: Bytes,
}

/// Sends one small request and reads the whole response within `timeout`.
/// `bearer` goes into `Authorization: Bearer <key>` (marked sensitive).
pub async fn exchange(
    base_url: &str,
    method: http::Method,
    path_and_query: &str,
    bearer: Option<&str>,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Reply, String> {
    let target = Target::parse(base_url)?;
    let url = format!("{base_url}{path_and_query}");
    let work = async {
        let io = dial(&target).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|error| format!("{method} {url}: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path_and_query}", target.path))
            .header(http::header::HOST, target.host_header());
        if let Some(key) = bearer {
            let mut value = http::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "the CPA Management Key contains invalid characters".to_string())?;
            value.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.clone().unwrap_or_default()))
            .map_err(|error| format!("{method} {url}: {error}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("{method} {url}: {error}"))?;
        let (parts, incoming) = response.into_parts();
        let body = incoming
            .collect()
            .await
            .map_err(|error| format!("{method} {url}: read body: {error}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{method} {url}: timeout after {} s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_ports_paths_and_loopback() {
        let target = Target::parse("http://127.0.0.1:8317").unwrap();
        assert_eq!(
            (target.tls, target.port, target.path.as_str()),
            (false, 8317, "")
        );
        assert!(target.is_loopback());
        assert_eq!(target.host_header(), "127.0.0.1:8317");

        let target = Target::parse("https://cpa.example.com/cpa").unwrap();
        assert_eq!(
            (target.tls, target.port, target.path.as_str()),
            (true, 443, "/cpa")
        );
        assert_eq!(target.host_header(), "cpa.example.com");
        assert!(!target.is_loopback());

        assert!(Target::parse("http://[::1]:8317").unwrap().is_loopback());
        assert_eq!(
            Target::parse("http://[::1]:8317").unwrap().host_header(),
            "[::1]:8317"
        );
        assert!(Target::parse("ftp://x").is_err());
    }
}
