//! Middleware: CORS (server-core §1.8), security headers on every answer, and per-route
//! HTTP request counting for `/metrics`.
//!
//! CORS is same-origin unless `USAGE_CORS_ORIGINS` names origins: with an empty list no
//! `Access-Control-Allow-Origin` is sent, so a page on another site cannot read any
//! answer. cpamp never sends `Access-Control-Allow-Credentials` (the admin key travels in
//! `Authorization`, which a browser attaches only when a script sets it), and the CORS
//! headers CPA puts on proxied answers are dropped by the proxy, so only this list
//! decides.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use crate::monitor::Monitor;

/// `USAGE_CORS_ORIGINS`: exact origins, or `*`; empty (the default) is same-origin only.
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Vec<String>);

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type";

/// The `Access-Control-Allow-Origin` value for `origin`, if any: the first list entry
/// that is `*` or equals the origin wins.
pub fn allowed_origin(origins: &[String], origin: Option<&str>) -> Option<String> {
    origins.iter().find_map(|entry| {
        if entry == "*" {
            Some("*".to_string())
        } else if origin == Some(entry.as_str()) {
            Some(entry.clone())
        } else {
            None
        }
    })
}

fn apply_cors(headers: &mut header::HeaderMap, origins: &[String], origin: Option<&str>) {
    if origins.is_empty() {
        return;
    }
    if let Some(allowed) = allowed_origin(origins, origin)
        && let Ok(value) = HeaderValue::from_str(&allowed)
    {
        let exact = allowed != "*";
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if exact {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
}

/// CORS for every route except the panel; `OPTIONS` anywhere else is answered 204
/// without authentication.
pub async fn cors(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if request.path() == "/management.html" {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let origins = request
        .app_data::<web::Data<CorsOrigins>>()
        .map(|origins| origins.0.clone())
        .unwrap_or_default();
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    if request.method() == Method::OPTIONS {
        let mut response = HttpResponse::new(StatusCode::NO_CONTENT);
        apply_cors(response.headers_mut(), &origins, origin.as_deref());
        return Ok(request.into_response(response));
    }
    let mut response = next.call(request).await?.map_into_boxed_body();
    apply_cors(response.headers_mut(), &origins, origin.as_deref());
    Ok(response)
}

/// `Content-Security-Policy` of answers that are not pages: nothing may load from them
/// and nothing may frame them.
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// Security headers on every answer, added only where the handler (or CPA, for proxied
/// answers) set none:
/// - `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` everywhere;
/// - `X-Frame-Options: DENY` and [`API_CONTENT_SECURITY_POLICY`] on everything but pages:
///   the embedded panel sets its own policy; a panel served from `PANEL_PATH` gets
///   `frame-ancestors 'none'` only, since cpamp cannot know what else it needs;
/// - CPA plugin resources (`/v0/resource/plugins*`, pages a panel may open in a frame)
///   get `X-Frame-Options: SAMEORIGIN` and no policy of cpamp's.
///
/// Handler errors are answers by the time they get here (so they carry the headers too);
/// the inner middleware answer their refusals (busy, too many connections) themselves.
pub async fn security_headers(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let kind = PathKind::of(request.path());
    let mut response = next.call(request).await?.map_into_boxed_body();
    add_security_headers(response.headers_mut(), kind);
    Ok(response)
}

/// Which security headers a path gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Panel,
    PluginResource,
    Api,
}

impl PathKind {
    fn of(path: &str) -> PathKind {
        if path == "/management.html" {
            PathKind::Panel
        } else if crate::plugins::is_resource_path(path) {
            PathKind::PluginResource
        } else {
            PathKind::Api
        }
    }
}

fn add_security_headers(headers: &mut header::HeaderMap, kind: PathKind) {
    let mut set = |name: header::HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    match kind {
        PathKind::Panel => {
            set(header::X_FRAME_OPTIONS, "DENY");
            set(header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'");
        }
        PathKind::PluginResource => set(header::X_FRAME_OPTIONS, "SAMEORIGIN"),
        PathKind::Api => {
            set(header::X_FRAME_OPTIONS, "DENY");
            set(header::CONTENT_SECURITY_POLICY, API_CONTENT_SECURITY_POLICY);
        }
    }
}

/// Counts every answered request by route pattern, method and status.
pub async fn count_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let monitor = request.app_data::<web::Data<Monitor>>().cloned();
    let method = request.method().as_str().to_string();
    let path = request.path().to_string();
    let response = next.call(request).await;
    if let Some(monitor) = monitor {
        let (status, pattern) = match &response {
            Ok(response) => (
                response.status().as_u16(),
                response.request().match_pattern(),
            ),
            Err(error) => (error.as_response_error().status_code().as_u16(), None),
        };
        monitor.count_request(&route_label(pattern.as_deref(), &path), &method, status);
    }
    response
}

/// A bounded route label: the matched pattern, or a fixed name for unmatched paths so
/// arbitrary URLs cannot grow the label set.
fn route_label(pattern: Option<&str>, path: &str) -> String {
    if let Some(pattern) = pattern {
        return pattern.to_string();
    }
    if path.starts_with("/v0/management/") {
        "/v0/management/{proxied}".to_string()
    } else if matches!(path, "/v1/models" | "/v1/models/" | "/models" | "/models/") {
        path.trim_end_matches('/').to_string()
    } else {
        "unmatched".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_origin_entry_wins() {
        let list = vec!["https://a.example".to_string(), "*".to_string()];
        assert_eq!(
            allowed_origin(&list, Some("https://a.example")).as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            allowed_origin(&list, Some("https://b.example")).as_deref(),
            Some("*")
        );
        let exact = vec!["https://a.example".to_string()];
        assert_eq!(allowed_origin(&exact, Some("https://b.example")), None);
        assert_eq!(allowed_origin(&[], Some("https://a.example")), None);
    }

    #[test]
    fn security_headers_fill_only_what_the_answer_lacks() {
        let mut api = header::HeaderMap::new();
        add_security_headers(&mut api, PathKind::of("/v0/management/usage"));
        assert_eq!(
            api.get(header::X_CONTENT_TYPE_OPTIONS).expect("header"),
            "nosniff"
        );
        assert_eq!(
            api.get(header::REFERRER_POLICY).expect("header"),
            "no-referrer"
        );
        assert_eq!(api.get(header::X_FRAME_OPTIONS).expect("header"), "DENY");
        assert_eq!(
            api.get(header::CONTENT_SECURITY_POLICY).expect("header"),
            API_CONTENT_SECURITY_POLICY
        );

        let mut panel = header::HeaderMap::new();
        panel.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'"),
        );
        add_security_headers(&mut panel, PathKind::of("/management.html"));
        assert_eq!(
            panel.get(header::CONTENT_SECURITY_POLICY).expect("header"),
            "default-src 'none'"
        );
        assert_eq!(panel.get(header::X_FRAME_OPTIONS).expect("header"), "DENY");
        let mut foreign_panel = header::HeaderMap::new();
        add_security_headers(&mut foreign_panel, PathKind::of("/management.html"));
        assert_eq!(
            foreign_panel
                .get(header::CONTENT_SECURITY_POLICY)
                .expect("header"),
            "frame-ancestors 'none'"
        );

        let mut plugin = header::HeaderMap::new();
        add_security_headers(
            &mut plugin,
            PathKind::of("/v0/resource/plugins/a/index.html"),
        );
        assert_eq!(
            plugin.get(header::X_FRAME_OPTIONS).expect("header"),
            "SAMEORIGIN"
        );
        assert!(!plugin.contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(
            plugin.get(header::X_CONTENT_TYPE_OPTIONS).expect("header"),
            "nosniff"
        );
    }

    #[test]
    fn unmatched_paths_get_bounded_labels() {
        assert_eq!(route_label(Some("/status"), "/status"), "/status");
        assert_eq!(
            route_label(None, "/v0/management/config"),
            "/v0/management/{proxied}"
        );
        assert_eq!(route_label(None, "/models/"), "/models");
        assert_eq!(route_label(None, "/random/a/b"), "unmatched");
    }
}
