//! Auth-file changes a person makes through the panel (the CPA proxy): they take the same
//! per-file lock as automation, so the two never interleave, and a successful change ends
//! automation's claim on the credential (automation spec §6; the ownership rule).
//!
//! Covered: `PATCH /v0/management/auth-files/status`, `PATCH /v0/management/auth-files`
//! with a `disabled` member, and `DELETE /v0/management/auth-files` (by `?name=`, the
//! `X-CPAMP-Auth-File-Physical-Name` header or a JSON body; `?all=true` locks every file).
//! The panel's `cpamp_*` body members are removed before CPA sees the request, as the
//! Go server did. (The Go server also verified the `X-CPAMP-Auth-File-*` identity
//! headers against CPA's listing before forwarding; cpamp drops those headers and does
//! not verify them yet.)

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::Value;

use super::audit::{Actor, Outcome, Subject};
use super::cooldowns::release_file;
use crate::error::ApiError;
use crate::state::{AppState, Store};

/// Largest request body read for bookkeeping (CPA's own limit plus room for the form).
pub const BODY_LIMIT: usize = (10 << 20) + (64 << 10);

/// What kind of auth-file change a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `PATCH /auth-files/status`.
    Status,
    /// `PATCH /auth-files`: a status change only when the body has `disabled`.
    Patch,
    /// `DELETE /auth-files`.
    Delete,
}

/// The change a proxied request makes, if it is one this module follows.
pub fn classify(method: &Method, path: &str) -> Option<Kind> {
    let path = path.trim_end_matches('/');
    match (method.as_str(), path) {
        ("PATCH", "/v0/management/auth-files/status") => Some(Kind::Status),
        ("PATCH", "/v0/management/auth-files") => Some(Kind::Patch),
        ("DELETE", "/v0/management/auth-files") => Some(Kind::Delete),
        _ => None,
    }
}

/// The files a change names, and whether it covers every file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// The auth file names named.
    pub names: Vec<String>,
    /// The `auth_index` named, if any.
    pub auth_index: Option<String>,
    /// The change covers every auth file.
    pub all: bool,
    /// `Some(disabled)` for a status change.
    pub disabled: Option<bool>,
}

fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.trim().to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
    .filter(|text| !text.is_empty())
}

/// Reads the targets of a change from its query, headers and body.
pub fn targets(kind: Kind, request: &HttpRequest, body: &[u8]) -> Targets {
    let mut targets = Targets::default();
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let object = json.as_ref().and_then(Value::as_object);
    if kind == Kind::Delete {
        for (key, value) in decode_pairs(request.query_string()) {
            match key.as_str() {
                "all" if matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "*") => {
                    targets.all = true;
                }
                "name" if !value.trim().is_empty() => targets.names.push(value.trim().to_string()),
                _ => {}
            }
        }
        // The panel sends the name `encodeURIComponent`-encoded.
        if let Some((_, physical)) = request
            .headers()
            .get("x-cpamp-auth-file-physical-name")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| decode_pairs(&format!("name={value}")).pop())
            .filter(|(_, name)| !name.trim().is_empty())
        {
            targets.names.push(physical.trim().to_string());
        }
    }
    if let Some(object) = object {
        targets.names.extend(text_of(object.get("name")));
        targets
            .names
            .extend(text_of(object.get("cpamp_physical_name")));
        if let Some(Value::Array(names)) = object.get("names") {
            targets
                .names
                .extend(names.iter().filter_map(|name| text_of(Some(name))));
        }
        targets.auth_index = text_of(object.get("auth_index"));
        targets.disabled = object.get("disabled").and_then(Value::as_bool);
    } else if let Some(Value::Array(names)) = json.as_ref() {
        targets
            .names
            .extend(names.iter().filter_map(|name| text_of(Some(name))));
    }
    targets.names.sort();
    targets.names.dedup();
    targets
}

/// `key=value` pairs of a query string, percent-decoded; malformed input gives none.
fn decode_pairs(query: &str) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(query)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

/// The panel adds `cpamp_*` members to status changes for the Manager; CPA never sees
/// them. Anything that is not a JSON object goes as it came.
fn strip_cpamp_fields(body: Bytes) -> Bytes {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let before = object.len();
    object.retain(|key, _| !key.starts_with("cpamp_"));
    if object.len() == before {
        return body;
    }
    serde_json::to_vec(&Value::Object(object))
        .map(Bytes::from)
        .unwrap_or(body)
}

/// Forwards an auth-file change under the coordinator's lock and, when CPA accepted it,
/// ends automation's claims on the files it touched.
pub(crate) async fn forward<S: Store>(
    kind: Kind,
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState<S>,
    base_url: &str,
    key: String,
) -> Result<HttpResponse, ApiError> {
    let body = crate::limits::read_body(payload, BODY_LIMIT, "request body").await?;
    let targets = targets(kind, request, &body);
    let automation = &state.automation;
    let guard = if targets.all || targets.names.is_empty() {
        automation.coordinator.lock_all().await
    } else {
        automation
            .coordinator
            .lock_files(targets.names.iter().map(String::as_str))
            .await
    };
    let response = crate::proxy::forward(
        request,
        crate::proxy::ForwardBody::Bytes(strip_cpamp_fields(body)),
        base_url,
        crate::proxy::Credential::Management(key),
        &[],
    )
    .await?;
    let changes_status = kind != Kind::Patch || targets.disabled.is_some();
    if changes_status {
        let accepted = response.status().is_success();
        let (verb, what) = match (kind, targets.disabled) {
            (Kind::Delete, _) => ("delete", "deleted"),
            (_, Some(true)) => ("disable", "disabled"),
            _ => ("enable", "enabled"),
        };
        let names: Vec<String> = if targets.all {
            state
                .store
                .active_cooldowns()
                .await
                .map(|active| active.into_iter().map(|row| row.auth_file_name).collect())
                .unwrap_or_default()
        } else {
            targets.names.clone()
        };
        for name in &names {
            if accepted {
                release_file(state, name, targets.auth_index.as_deref(), what).await;
                // Inspection may only re-enable what it disabled itself.
                if let Err(error) = state
                    .store
                    .remove_ownership(name, targets.auth_index.as_deref())
                    .await
                {
                    tracing::warn!(%error, "removing inspection ownership failed");
                }
            }
            let subject = Subject {
                auth_file_name: name.clone(),
                auth_index: targets.auth_index.clone().unwrap_or_default(),
                ..Subject::default()
            };
            automation
                .audit
                .record(
                    &state.store,
                    (Actor::Operator, verb),
                    &subject,
                    "through the panel",
                    if accepted {
                        Outcome::Ok
                    } else {
                        Outcome::Failed
                    },
                    &format!("CPA answered {}", response.status()),
                )
                .await;
        }
    }
    drop(guard);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn changes_are_recognised() {
        assert_eq!(
            classify(&Method::PATCH, "/v0/management/auth-files/status/"),
            Some(Kind::Status)
        );
        assert_eq!(
            classify(&Method::DELETE, "/v0/management/auth-files"),
            Some(Kind::Delete)
        );
        assert_eq!(classify(&Method::GET, "/v0/management/auth-files"), None);
        assert_eq!(classify(&Method::POST, "/v0/management/api-call"), None);
    }

    #[test]
    fn targets_come_from_query_headers_and_body() {
        let request = TestRequest::patch().to_http_request();
        let status = targets(
            Kind::Status,
            &request,
            br#"{"name":"codex-a.json","auth_index":"3f9c","disabled":true,"cpamp_physical_name":"codex-a.json"}"#,
        );
        assert_eq!(status.names, ["codex-a.json"]);
        assert_eq!(status.auth_index.as_deref(), Some("3f9c"));
        assert_eq!(status.disabled, Some(true));

        let request = TestRequest::delete()
            .uri("/v0/management/auth-files?name=a%40b.json&name=c.json")
            .insert_header(("X-CPAMP-Auth-File-Physical-Name", "d.json"))
            .to_http_request();
        let delete = targets(Kind::Delete, &request, b"");
        assert_eq!(delete.names, ["a@b.json", "c.json", "d.json"]);
        let request = TestRequest::delete()
            .uri("/v0/management/auth-files?all=TRUE")
            .to_http_request();
        assert!(targets(Kind::Delete, &request, b"").all);
        let request = TestRequest::delete().to_http_request();
        assert_eq!(
            targets(Kind::Delete, &request, br#"["x.json","y.json"]"#).names,
            ["x.json", "y.json"]
        );
    }
}
