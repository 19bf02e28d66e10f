//! What a collector run needs to know: where CPA is, the key, the mode and the pacing.

use std::fmt;
use std::time::Duration;

/// CPA's default listening port; RESP dials it when the URL names no port.
pub const CPA_DEFAULT_PORT: u16 = 8317;

/// Which transports a run may use (server-core §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// SUBSCRIBE, else HTTP queue, else RESP pop.
    #[default]
    Auto,
    /// `SUBSCRIBE` to the queue channel (CPA's pub/sub over RESP), draining the queue with
    /// pops after every (re)subscription.
    Subscribe,
    /// Only pop CPA's HTTP usage queue (`GET /v0/management/usage-queue`).
    Http,
    /// Only pop the RESP list (`LPOP`/`RPOP`).
    Resp,
}

impl Mode {
    /// Lower-cases; anything that is not `http`, `resp` or `subscribe` is `auto`.
    pub fn parse(text: &str) -> Mode {
        match text.trim().to_ascii_lowercase().as_str() {
            "http" => Mode::Http,
            "resp" => Mode::Resp,
            "subscribe" => Mode::Subscribe,
            _ => Mode::Auto,
        }
    }

    /// The mode's name as configuration and `/status` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Subscribe => "subscribe",
            Mode::Http => "http",
            Mode::Resp => "resp",
        }
    }
}

/// Which RESP pop command is sent. CPA answers both with the oldest items; against a real
/// Redis list `Left` pops the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PopSide {
    /// `LPOP`.
    Left,
    /// `RPOP` (the default).
    #[default]
    Right,
}

impl PopSide {
    /// `left`/`lpop` (any case) is `Left`; anything else is `Right`.
    pub fn parse(text: &str) -> PopSide {
        match text.trim().to_ascii_lowercase().as_str() {
            "left" | "lpop" => PopSide::Left,
            _ => PopSide::Right,
        }
    }

    /// The side's name as configuration spells it (`left`/`right`).
    pub fn as_str(self) -> &'static str {
        match self {
            PopSide::Left => "left",
            PopSide::Right => "right",
        }
    }

    pub(crate) fn command(self) -> &'static [u8] {
        match self {
            PopSide::Left => b"LPOP",
            PopSide::Right => b"RPOP",
        }
    }
}

/// The CPA Management Key. `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ManagementKey(String);

impl ManagementKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ManagementKey {
        ManagementKey(key.into())
    }

    /// The key itself, for the `Authorization` header or RESP `AUTH`; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no key was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ManagementKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(if self.0.is_empty() {
            "ManagementKey(<empty>)"
        } else {
            "ManagementKey(<redacted>)"
        })
    }
}

/// Error backoff: `initial` doubling up to `max`, reset after every success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The first wait after a failure.
    pub initial: Duration,
    /// The longest wait between retries.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// Everything one collector run uses. Build with [`CollectorSettings::new`] and adjust.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorSettings {
    /// CPA base URL; normalised by [`normalize_upstream`] when the run starts.
    pub upstream: String,
    /// CPA's management key, sent as a bearer token (HTTP) or with `AUTH` (RESP).
    pub management_key: ManagementKey,
    /// Which transports to use; `Auto` tries subscribe, then HTTP, then RESP pop.
    pub mode: Mode,
    /// RESP list key and pub/sub channel (`usage`).
    pub queue: String,
    /// Which RESP pop command is sent.
    pub pop_side: PopSide,
    /// Items requested per pop (at least 1).
    pub batch_size: u32,
    /// Wait after an empty pop.
    pub poll_interval: Duration,
    /// Skip certificate checks for RESP over TLS (`https://` upstreams) only.
    pub tls_skip_verify: bool,
    /// Waits between retries after transport or store failures.
    pub backoff: BackoffPolicy,
    /// How long `shutdown` keeps retrying a batch the store refuses before giving up.
    pub shutdown_grace: Duration,
    /// How often pop modes compare CPA's request counters with what arrived (0 = never).
    pub consumer_check_interval: Duration,
}

impl CollectorSettings {
    /// Settings for `upstream` with CPA's defaults: mode `auto`, queue `usage`, `RPOP`, 100
    /// items per pop, 500 ms between empty polls, 1 s to 30 s backoff, a 15 s shutdown
    /// grace, and a consumer check every minute.
    pub fn new(upstream: impl Into<String>, management_key: ManagementKey) -> CollectorSettings {
        CollectorSettings {
            upstream: upstream.into(),
            management_key,
            mode: Mode::Auto,
            queue: "usage".to_string(),
            pop_side: PopSide::Right,
            batch_size: 100,
            poll_interval: Duration::from_millis(500),
            tls_skip_verify: false,
            backoff: BackoffPolicy::default(),
            shutdown_grace: Duration::from_secs(15),
            consumer_check_interval: Duration::from_secs(60),
        }
    }
}

/// Trims, drops trailing `/`, and prepends `http://` when there is no scheme.
pub fn normalize_upstream(raw: &str) -> String {
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.is_empty() || trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    }
}

/// Host, port and TLS flag of an upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub tls: bool,
    /// Host without IPv6 brackets (for dialling and SNI).
    pub host: String,
    pub port: u16,
    /// Path prefix before `/v0/...` (empty or starting with `/`, no trailing `/`).
    pub path: String,
}

impl Endpoint {
    /// `default_port` applies when the URL names none: CPA's 8317 for RESP (Go dialled 80,
    /// where CPA never listens), the scheme's standard port for HTTP requests, which may
    /// legitimately go through a reverse proxy.
    pub(crate) fn parse(upstream: &str, default_port: Option<u16>) -> Result<Endpoint, String> {
        let normalized = normalize_upstream(upstream);
        if normalized.is_empty() {
            return Err("upstream URL is empty".to_string());
        }
        let uri: http::Uri = normalized
            .parse()
            .map_err(|_| format!("invalid upstream URL {upstream:?}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("unsupported upstream scheme {other:?}")),
            None => return Err(format!("invalid upstream URL {upstream:?}")),
        };
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| format!("invalid upstream URL {upstream:?}"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri
            .port_u16()
            .or(default_port)
            .unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/').to_string();
        Ok(Endpoint {
            tls,
            host,
            port,
            path,
        })
    }

    /// `host:port` for the `Host` header and dialling (IPv6 in brackets).
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn resp_uses_cpa_port_when_none_is_given() {
        let endpoint = Endpoint::parse("cpa.local", Some(CPA_DEFAULT_PORT)).unwrap();
        assert_eq!(
            (endpoint.tls, endpoint.host.as_str(), endpoint.port),
            (false, "cpa.local", 8317)
        );
        let endpoint = Endpoint::parse("https://cpa.local/", Some(CPA_DEFAULT_PORT)).unwrap();
        assert_eq!((endpoint.tls, endpoint.port), (true, 8317));
        let endpoint = Endpoint::parse("http://[::1]:9000/base/", Some(CPA_DEFAULT_PORT)).unwrap();
        assert_eq!(
            (
                endpoint.host.as_str(),
                endpoint.port,
                endpoint.path.as_str()
            ),
            ("::1", 9000, "/base")
        );
        assert_eq!(endpoint.authority(), "[::1]:9000");
        assert_eq!(
            Endpoint::parse("https://proxy.example", None).unwrap().port,
            443
        );
    }

    #[test]
    fn url_errors_name_the_problem() {
        assert_eq!(
            Endpoint::parse("  ", None).unwrap_err(),
            "upstream URL is empty"
        );
        assert_eq!(
            Endpoint::parse("ftp://x", None).unwrap_err(),
            "unsupported upstream scheme \"ftp\""
        );
    }

    #[test]
    fn modes_and_sides_parse_like_go() {
        assert_eq!(Mode::parse(" HTTP "), Mode::Http);
        assert_eq!(Mode::parse("polling"), Mode::Auto);
        assert_eq!(PopSide::parse("LPOP"), PopSide::Left);
        assert_eq!(PopSide::parse("whatever"), PopSide::Right);
        assert_eq!(
            format!("{:?}", ManagementKey::new("secret")),
            "ManagementKey(<redacted>)"
        );
    }
}
