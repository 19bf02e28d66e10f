//! CPA plugin paths (server-core §6.4, automation spec §7).
//!
//! - Plugin management paths: `/v0/management/<head>[/…]` whose head is none of CPA's own
//!   management heads. Forwarded like every management path (the admin key first, the
//!   saved CPA Management Key in its place).
//! - Plugin resources: `/v0/resource/plugins` and below (plugin pages the panel opens in
//!   a frame, their assets and APIs). With a valid admin key the CPA Management Key is
//!   substituted. Without a token (public plugin assets) or with the CPA Management Key
//!   itself, the caller's own `Authorization` (or none) goes to CPA and no admin check
//!   runs, so loading assets never counts as a failed login. A token the admin check
//!   rejects is passed on only when it does not look like the admin key (`cmp_admin_…`
//!   or remembered from a login), and one the check could not decide on (blocked
//!   address, busy server) is never passed on: the admin key never reaches CPA, and the
//!   CPA Management Key is never lent to a caller without the admin key. Methods other
//!   than GET, HEAD, POST, PUT, PATCH and DELETE answer 405.
//! - Origin rewrite, for both kinds: behind cpamp a plugin page sends cpamp's origin,
//!   while the plugin inside CPA needs CPA's. `X-Codex-Invite-Origin`, when sent, and a
//!   `management_origin` member of a JSON object body are set to CPA's origin
//!   (`scheme://host[:port]` of the CPA URL). JSON bodies are read up to
//!   [`JSON_BODY_LIMIT`] (413 beyond; the Go server read them without limit).

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::Value;

use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::proxy::{Credential, ForwardBody};
use crate::state::{AppState, Store};

/// Management heads that are CPA's own (or cpamp's), never plugins.
pub const RESERVED_HEADS: &[&str] = &[
    "account-action-candidates",
    "accounts",
    "api-call",
    "api-key-aliases",
    "api-key-usage",
    "auth-files",
    "codex-inspection",
    "config",
    "dashboard",
    "model-prices",
    "monitoring",
    "plugin-store",
    "plugins",
    "reload",
    "usage",
    "usage-statistics-enabled",
];

/// Largest JSON body read for the origin rewrite.
pub const JSON_BODY_LIMIT: usize = 4 << 20;

const INVITE_ORIGIN: &str = "x-codex-invite-origin";

/// A management path that belongs to a CPA plugin.
pub fn is_management_plugin_path(path: &str) -> bool {
    let Some(rest) = path.trim_end_matches('/').strip_prefix("/v0/management/") else {
        return false;
    };
    let head = rest.split('/').next().unwrap_or_default();
    !head.is_empty() && !RESERVED_HEADS.contains(&head)
}

/// `/v0/resource/plugins` or below.
pub fn is_resource_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path == "/v0/resource/plugins" || path.starts_with("/v0/resource/plugins/")
}

/// `scheme://host[:port]` of a CPA base URL.
pub fn cpa_origin(base_url: &str) -> Option<String> {
    let uri: http::Uri = base_url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// The body with `management_origin` set to `origin`, when it is a JSON object that has
/// the member; `None` leaves the body as it is.
pub fn rewrite_body(body: &[u8], origin: &str) -> Option<Bytes> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    if !object.contains_key("management_origin") {
        return None;
    }
    object.insert(
        "management_origin".into(),
        Value::String(origin.to_string()),
    );
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

fn is_json(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|media| media == "application/json" || media.ends_with("+json"))
}

/// Forwards a plugin request with CPA's origin in place of the caller's.
pub(crate) async fn forward(
    request: &HttpRequest,
    payload: web::Payload,
    base_url: &str,
    credential: Credential,
) -> Result<HttpResponse, ApiError> {
    let origin = cpa_origin(base_url);
    let mut overrides = Vec::new();
    if let Some(origin) = &origin
        && request.headers().contains_key(INVITE_ORIGIN)
    {
        overrides.push((INVITE_ORIGIN, origin.clone()));
    }
    let body = match &origin {
        Some(origin) if is_json(request) => {
            let body =
                crate::limits::read_body(payload, JSON_BODY_LIMIT, "plugin request body").await?;
            ForwardBody::Bytes(rewrite_body(&body, origin).unwrap_or(body))
        }
        _ => ForwardBody::Stream(payload),
    };
    crate::proxy::forward(request, body, base_url, credential, &overrides).await
}

/// `/v0/resource/plugins[/…]`.
pub(crate) async fn resource<S: Store>(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState<S>,
) -> Result<HttpResponse, ApiError> {
    if !matches!(
        request.method().as_str(),
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
    ) {
        return Err(ApiError::method_not_allowed());
    }
    let connection = crate::connection::resolve(state)
        .await?
        .ok_or_else(ApiError::not_configured)?;
    let key = connection.management_key.expose();
    let credential = resource_credential(request, key).await;
    let credential = match credential {
        ResourceCredential::Admin => Credential::Management(key.to_string()),
        ResourceCredential::Own => Credential::ClientKey,
        ResourceCredential::NotAdmin => Credential::ClientKey,
        ResourceCredential::Unchecked => Credential::None,
    };
    forward(request, payload, &connection.base_url, credential).await
}

/// Who a plugin resource request is, as far as credentials go.
enum ResourceCredential {
    /// The admin key verified: CPA gets the CPA Management Key.
    Admin,
    /// No bearer token, or the CPA Management Key itself: the caller's own credential
    /// (or none) goes to CPA, unless it looks like the admin key; no admin check runs, so
    /// public assets cost no failure.
    Own,
    /// A token the admin check rejected: forwarded only when it is not shaped like (or
    /// remembered as) the admin key.
    NotAdmin,
    /// The admin check could not decide (the address is blocked, or the server is
    /// busy): the token may be the admin key, so nothing is forwarded with it.
    Unchecked,
}

async fn resource_credential(request: &HttpRequest, cpa_key: &str) -> ResourceCredential {
    let Some(token) = crate::auth::bearer_token(request) else {
        return ResourceCredential::Own;
    };
    if crate::auth::same_secret(&token, cpa_key) {
        return ResourceCredential::Own;
    }
    match AdminAuth::from_request(request, &mut Payload::None).await {
        Ok(_) => ResourceCredential::Admin,
        Err(error) if error.status == actix_web::http::StatusCode::UNAUTHORIZED => {
            ResourceCredential::NotAdmin
        }
        Err(_) => ResourceCredential::Unchecked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_paths_are_the_unreserved_heads() {
        assert!(is_management_plugin_path(
            "/v0/management/codex-team-invite/invite"
        ));
        assert!(is_management_plugin_path("/v0/management/my-plugin"));
        assert!(!is_management_plugin_path("/v0/management/auth-files"));
        assert!(!is_management_plugin_path("/v0/management/plugins/list"));
        assert!(!is_management_plugin_path("/v0/management/"));
        assert!(is_resource_path("/v0/resource/plugins"));
        assert!(is_resource_path("/v0/resource/plugins/invite/index.html"));
        assert!(!is_resource_path("/v0/resource/pluginsx"));
    }

    #[test]
    fn the_origin_is_rewritten_only_where_it_appears() {
        assert_eq!(
            cpa_origin("http://cpa.internal:8317/base").as_deref(),
            Some("http://cpa.internal:8317")
        );
        assert_eq!(
            cpa_origin("https://cpa.example.com").as_deref(),
            Some("https://cpa.example.com")
        );
        let rewritten = rewrite_body(
            br#"{"email":"a@example.com","management_origin":"https://panel.example.com"}"#,
            "http://cpa:8317",
        )
        .expect("rewritten");
        let value: Value = serde_json::from_slice(&rewritten).expect("json");
        assert_eq!(value["management_origin"], "http://cpa:8317");
        assert_eq!(value["email"], "a@example.com");
        assert_eq!(rewrite_body(br#"{"email":"a"}"#, "http://cpa"), None);
        assert_eq!(rewrite_body(b"[1,2]", "http://cpa"), None);
        assert_eq!(rewrite_body(b"not json", "http://cpa"), None);
    }
}
