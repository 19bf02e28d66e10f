//! The CPA credential calls automation makes (automation spec §0.2): list auth files,
//! change a credential's status, delete a file, download one, and `api-call` (CPA calls an
//! upstream with the credential's token). Every call uses the CPA Management Key and its
//! own short-lived connection ([`crate::cpa_http::exchange`]).

use std::time::Duration;

use bytes::Bytes;
use cpamp_domain::Secret;
use cpamp_domain::automation::authfile::{AuthFileEntry, parse_listing};
use http::Method;
use serde_json::{Map, Value, json};

use crate::connection::CpaConnection;
use crate::cpa_http::exchange;

/// Listings, status changes and deletes give up after this long (the Go client's timeout).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Error bodies quoted in messages are cut here.
const BODY_QUOTE_LIMIT: usize = 4096;
/// The largest listing or download accepted.
const LISTING_LIMIT: usize = 64 << 20;
/// The largest `api-call` reply accepted.
const API_CALL_LIMIT: usize = 16 << 20;

/// Why a call to CPA failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpaError {
    /// CPA could not be reached or the exchange broke off.
    #[error("{0}")]
    Transport(String),
    /// CPA answered with an error status.
    #[error("{call}: HTTP {status} {body}")]
    Status {
        /// The call that failed.
        call: String,
        /// CPA's HTTP status.
        status: u16,
        /// CPA's answer (shortened).
        body: String,
    },
    /// CPA answered 2xx with something that is not what it sends.
    #[error("{0}")]
    Decode(String),
    /// A 2xx answer that does not confirm the change (automation spec §0.5).
    #[error("{0}")]
    NotConfirmed(String),
}

impl CpaError {
    /// CPA's HTTP status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            CpaError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One listed credential: its identity and the raw entry CPA sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedFile {
    /// The credential's identity.
    pub entry: AuthFileEntry,
    /// The entry exactly as CPA listed it.
    pub raw: Map<String, Value>,
}

/// An upstream request CPA makes with a credential's token (`$TOKEN$` in a header value is
/// replaced by CPA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    /// The credential whose token CPA uses.
    pub auth_index: String,
    /// The upstream HTTP method.
    pub method: String,
    /// The upstream URL.
    pub url: String,
    /// Request headers; `$TOKEN$` in a value is replaced by CPA.
    pub header: Vec<(String, String)>,
    /// The request body.
    pub data: Option<String>,
}

/// What the upstream answered, as CPA relays it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCallReply {
    /// `None` when CPA's reply carried no status code.
    pub status_code: Option<u16>,
    /// The upstream body (CPA sends it as a string; a JSON body is kept as its text).
    pub body: String,
}

/// Calls to one CPA with one key. Cheap to clone.
#[derive(Clone)]
pub struct CpaClient {
    base_url: String,
    key: Secret,
}

impl std::fmt::Debug for CpaClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CpaClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl CpaClient {
    /// A client of the CPA at `connection`.
    pub fn new(connection: &CpaConnection) -> CpaClient {
        CpaClient {
            base_url: connection.base_url.clone(),
            key: connection.management_key.clone(),
        }
    }

    /// The CPA base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// True when both clients talk to the same CPA with the same key.
    pub fn same_source(&self, other: &CpaClient) -> bool {
        self.base_url == other.base_url
            && crate::auth::same_secret(self.key.expose(), other.key.expose())
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Bytes, CpaError> {
        let reply = exchange(
            &self.base_url,
            method.clone(),
            path_and_query,
            Some(self.key.expose()),
            body,
            timeout,
        )
        .await
        .map_err(CpaError::Transport)?;
        let call = format!(
            "{method} {}",
            path_and_query.split('?').next().unwrap_or("")
        );
        if !reply.status.is_success() {
            return Err(CpaError::Status {
                call,
                status: reply.status.as_u16(),
                body: quote(&reply.body),
            });
        }
        if reply.body.len() > limit {
            return Err(CpaError::Decode(format!(
                "{call}: CPA response too large ({} bytes)",
                reply.body.len()
            )));
        }
        Ok(reply.body)
    }

    /// `GET auth-files`, optionally filtered by runtime id or file name and auth index.
    pub async fn list(
        &self,
        name: Option<&str>,
        auth_index: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<ListedFile>, CpaError> {
        let raw = self.list_raw(name, auth_index, timeout).await?;
        Ok(raw
            .into_iter()
            .map(|raw| ListedFile {
                entry: AuthFileEntry::from_object(&raw),
                raw,
            })
            .collect())
    }

    /// The listing entries as CPA sent them.
    pub async fn list_raw(
        &self,
        name: Option<&str>,
        auth_index: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<Map<String, Value>>, CpaError> {
        let mut query = Vec::new();
        if let Some(name) = name.filter(|name| !name.is_empty()) {
            query.push(format!("name={}", encode(name)));
        }
        if let Some(index) = auth_index.filter(|index| !index.is_empty()) {
            query.push(format!("auth_index={}", encode(index)));
        }
        let path = if query.is_empty() {
            "/v0/management/auth-files".to_string()
        } else {
            format!("/v0/management/auth-files?{}", query.join("&"))
        };
        let body = self
            .call(Method::GET, &path, None, timeout, LISTING_LIMIT)
            .await?;
        parse_listing(&body).map_err(|error| CpaError::Decode(error.to_string()))
    }

    /// `PATCH auth-files/status`; CPA's answer must confirm the change.
    pub async fn set_disabled(
        &self,
        selector: &str,
        auth_index: Option<&str>,
        disabled: bool,
    ) -> Result<(), CpaError> {
        let mut body = json!({"name": selector, "disabled": disabled});
        if let (Some(index), Some(object)) = (
            auth_index.filter(|index| !index.is_empty()),
            body.as_object_mut(),
        ) {
            object.insert("auth_index".into(), Value::String(index.to_string()));
        }
        let reply = self
            .call(
                Method::PATCH,
                "/v0/management/auth-files/status",
                Some(Bytes::from(body.to_string())),
                CALL_TIMEOUT,
                4 << 20,
            )
            .await?;
        confirm(&reply)
    }

    /// `DELETE auth-files?name=`; CPA's answer must confirm the delete.
    pub async fn delete(&self, selector: &str) -> Result<(), CpaError> {
        let path = format!("/v0/management/auth-files?name={}", encode(selector));
        let reply = self
            .call(Method::DELETE, &path, None, CALL_TIMEOUT, 4 << 20)
            .await?;
        confirm(&reply)
    }

    /// `GET auth-files/download?name=`: the file's content.
    pub async fn download(&self, name: &str) -> Result<Bytes, CpaError> {
        let path = format!("/v0/management/auth-files/download?name={}", encode(name));
        self.call(Method::GET, &path, None, CALL_TIMEOUT, LISTING_LIMIT)
            .await
    }

    /// `POST api-call`, waiting at most `timeout`.
    pub async fn api_call(
        &self,
        call: &ApiCall,
        timeout: Duration,
    ) -> Result<ApiCallReply, CpaError> {
        let mut header = Map::new();
        for (key, value) in &call.header {
            header.insert(key.clone(), Value::String(value.clone()));
        }
        let mut body = json!({
            "authIndex": call.auth_index,
            "method": call.method,
            "url": call.url,
            "header": header,
        });
        if let (Some(data), Some(object)) = (&call.data, body.as_object_mut()) {
            object.insert("data".into(), Value::String(data.clone()));
        }
        let reply = exchange(
            &self.base_url,
            Method::POST,
            "/v0/management/api-call",
            Some(self.key.expose()),
            Some(Bytes::from(body.to_string())),
            timeout,
        )
        .await
        .map_err(CpaError::Transport)?;
        if !reply.status.is_success() {
            let mut text = String::from_utf8_lossy(&reply.body).into_owned();
            text.truncate(floor(&text, 2048));
            return Err(CpaError::Decode(format!(
                "api-call failed: {} {}",
                reply.status,
                text.trim()
            )));
        }
        if reply.body.len() > API_CALL_LIMIT {
            return Err(CpaError::Decode(
                "api-call failed: response too large".into(),
            ));
        }
        let value: Value = serde_json::from_slice(&reply.body)
            .map_err(|error| CpaError::Decode(format!("decode api-call response: {error}")))?;
        let status_code = ["status_code", "statusCode"]
            .iter()
            .find_map(|key| value.get(*key).and_then(Value::as_u64))
            .and_then(|code| u16::try_from(code).ok());
        let body = match value.get("body") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        Ok(ApiCallReply { status_code, body })
    }
}

/// CPA's answer to a change must be empty or a JSON object that reports success
/// (`{"status":"ok"}` from CPA), and must not report a failure.
pub fn confirm(body: &[u8]) -> Result<(), CpaError> {
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        return Ok(());
    }
    let unconfirmed = || {
        CpaError::NotConfirmed(format!(
            "CPA action response did not confirm success: {}",
            quote(body)
        ))
    };
    let value: Value = serde_json::from_str(&text).map_err(|_| unconfirmed())?;
    let object = value.as_object().ok_or_else(unconfirmed)?;
    let non_empty = |key: &str| match object.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::String(text)) => !text.trim().is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(members)) => !members.is_empty(),
        Some(_) => true,
    };
    let status = object
        .get("status")
        .and_then(Value::as_str)
        .map(|status| status.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let flag = |key: &str| object.get(key).and_then(Value::as_bool);
    if non_empty("failed")
        || non_empty("error")
        || flag("success") == Some(false)
        || flag("ok") == Some(false)
        || matches!(status.as_str(), "error" | "failed" | "partial")
    {
        return Err(CpaError::NotConfirmed(format!(
            "CPA reported a failure: {}",
            quote(body)
        )));
    }
    if flag("success") == Some(true)
        || flag("ok") == Some(true)
        || matches!(status.as_str(), "ok" | "success")
    {
        return Ok(());
    }
    Err(unconfirmed())
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let cut = floor(&text, BODY_QUOTE_LIMIT);
    text[..cut].trim().to_string()
}

fn floor(text: &str, limit: usize) -> usize {
    if text.len() <= limit {
        return text.len();
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confirmed_answers_count_as_success() {
        assert!(confirm(b"").is_ok());
        assert!(confirm(br#"{"status":"ok","disabled":true}"#).is_ok());
        assert!(confirm(br#"{"success":true}"#).is_ok());
        assert!(confirm(br#"{"ok":true}"#).is_ok());
        for body in [
            &br#"{"status":"partial","deleted":1}"#[..],
            br#"{"status":"ok","failed":[{"name":"a"}]}"#,
            br#"{"error":"nope"}"#,
            br#"{"disabled":true}"#,
            br#"[1]"#,
            b"plain text",
        ] {
            assert!(confirm(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode("codex-a@example.com.json"),
            "codex-a%40example.com.json"
        );
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
