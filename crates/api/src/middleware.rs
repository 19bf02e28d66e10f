//! Middleware: CORS (server-core §1.8) and per-route HTTP request counting for `/metrics`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use crate::monitor::Monitor;

/// `USAGE_CORS_ORIGINS`: `*` or exact origins.
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
        .unwrap_or_else(|| vec!["*".to_string()]);
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
