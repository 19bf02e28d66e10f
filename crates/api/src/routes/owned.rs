//! The route-ownership table: every path the Manager Server answers itself.
//!
//! The CPA proxy is the application's default service, so a Manager path that no
//! module registers would silently reach CPA and come back as CPA's `404`. This table
//! closes that gap: each entry is registered here, after every resource module and
//! before the proxy, as a fallback that answers locally:
//! - [`RouteState::Pending`]: `501` with code `not_implemented` (the feature is not
//!   built yet; the path still never reaches CPA);
//! - [`RouteState::Served`]: `405 method not allowed`, for a method or sub-path the
//!   serving module does not register (the Go server answers those with 405 too).
//!
//! Both fallbacks check the admin key first where [`RouteAuth::Admin`] says so, so an
//! unauthenticated caller learns nothing beyond `401`.
//!
//! To serve a pending path: register its resources in your module's `configure`,
//! called from `routes::configure` before this module's `configure`, and flip the entry to
//! `Served`. Resources registered earlier win, so the table's fallback only sees what
//! your module leaves out. The black-box test `owned_routes` (in
//! `apps/cpamp-server/tests/it/`) walks this table and fails when a path reaches CPA,
//! a pending entry answers anything but 501, or a served entry answers 501.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};

use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorCode};
use PathMatch::{Exact, Subtree};
use RouteAuth::{Admin, Public};
use RouteState::{Pending, Served};

/// Which paths an entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    /// The path itself and the path with one trailing `/`.
    Exact,
    /// The path itself and everything below it (`path/`, `path/a/b`).
    Subtree,
}

/// Whether cpamp serves an owned path yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteState {
    /// A module registers handlers; the fallback answers 405 for the rest.
    Served,
    /// Not built yet: answers 501 `not_implemented`.
    Pending,
}

/// Who may reach an owned path's fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    /// The admin key is checked first (401 otherwise).
    Admin,
    /// No credential needed (health, the panel, public plugin assets).
    Public,
}

/// One Manager-owned path (or subtree).
#[derive(Debug, Clone, Copy)]
pub struct OwnedRoute {
    /// The path (exact, or the root of a subtree).
    pub path: &'static str,
    /// Which paths the entry covers.
    pub matches: PathMatch,
    /// Whether it is served or answers 501.
    pub state: RouteState,
    /// Who may reach its fallback.
    pub auth: RouteAuth,
    /// What the path is for, in the 501 message ("quota snapshots are not ...").
    pub feature: &'static str,
}

const fn owned(
    path: &'static str,
    matches: PathMatch,
    state: RouteState,
    auth: RouteAuth,
    feature: &'static str,
) -> OwnedRoute {
    OwnedRoute {
        path,
        matches,
        state,
        auth,
        feature,
    }
}

/// Every path the Manager Server answers itself (server-core §6.1, analytics §0.1,
/// automation §2–§8), plus cpamp's own additions. More specific entries come first:
/// the fallbacks are registered in this order and the first match wins.
pub const OWNED_ROUTES: &[OwnedRoute] = &[
    // Exact routes outside the management API.
    owned("/health", Exact, Served, Public, "the health check"),
    owned("/openapi.json", Exact, Served, Public, "the API reference"),
    owned("/status", Exact, Served, Admin, "the status report"),
    owned("/metrics", Exact, Served, Admin, "metrics"),
    owned("/setup", Exact, Served, Public, "setup"),
    owned("/usage-service/info", Exact, Served, Public, "service info"),
    owned(
        "/usage-service/config",
        Exact,
        Served,
        Admin,
        "the service configuration",
    ),
    owned(
        "/usage-service/account-processing-policy",
        Exact,
        Served,
        Admin,
        "the account processing policy",
    ),
    owned(
        "/usage-service/quota-cooldowns",
        Exact,
        Served,
        Admin,
        "quota cooldowns",
    ),
    owned("/usage-service/backups", Subtree, Served, Admin, "backups"),
    owned(
        "/usage-service/automation-audit",
        Exact,
        Served,
        Admin,
        "the automation audit log",
    ),
    owned("/management.html", Exact, Served, Public, "the panel"),
    // Management API heads the Manager answers itself.
    owned(
        "/v0/management/model-prices",
        Subtree,
        Served,
        Admin,
        "model prices",
    ),
    owned(
        "/v0/management/api-key-aliases",
        Subtree,
        Served,
        Admin,
        "API key aliases",
    ),
    owned(
        "/v0/management/account-action-candidates",
        Subtree,
        Served,
        Admin,
        "the account action queue",
    ),
    owned(
        "/v0/management/codex-inspection",
        Subtree,
        Served,
        Admin,
        "server inspection",
    ),
    owned(
        "/v0/management/dashboard",
        Subtree,
        Served,
        Admin,
        "the dashboard",
    ),
    owned(
        "/v0/management/monitoring",
        Subtree,
        Served,
        Admin,
        "request monitoring",
    ),
    owned(
        "/v0/management/quota-snapshots",
        Subtree,
        Served,
        Admin,
        "quota snapshots",
    ),
    owned(
        "/v0/management/usage/export",
        Exact,
        Served,
        Admin,
        "usage export",
    ),
    owned(
        "/v0/management/usage/import",
        Exact,
        Served,
        Admin,
        "usage import",
    ),
    owned(
        "/v0/management/usage/import-sessions",
        Subtree,
        Served,
        Admin,
        "chunked usage import sessions",
    ),
    owned(
        "/v0/management/usage",
        Subtree,
        Served,
        Admin,
        "the compatible usage payload",
    ),
    owned(
        "/v0/management/collector-gaps",
        Exact,
        Served,
        Admin,
        "collection gaps",
    ),
];

/// Registers the fallback of every owned path. Call after every resource module and
/// before the CPA proxy.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    for route in OWNED_ROUTES {
        let patterns = match route.matches {
            Exact => vec![route.path.to_string(), format!("{}/", route.path)],
            Subtree => vec![
                route.path.to_string(),
                format!("{}/{{tail:.*}}", route.path),
            ],
        };
        let route = *route;
        config.service(web::resource(patterns).default_service(web::to(
            move |request: HttpRequest| fallback(route, request),
        )));
    }
}

/// The owned entry covering `path`, if any (first match in table order).
pub fn owner_of(path: &str) -> Option<&'static OwnedRoute> {
    OWNED_ROUTES.iter().find(|route| route.covers(path))
}

impl OwnedRoute {
    /// Whether this entry's fallback is registered for `path`.
    pub fn covers(&self, path: &str) -> bool {
        match self.matches {
            Exact => path == self.path || path.strip_suffix('/') == Some(self.path),
            Subtree => {
                path == self.path
                    || path
                        .strip_prefix(self.path)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }
}

async fn fallback(route: OwnedRoute, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    if route.auth == Admin {
        AdminAuth::from_request(&request, &mut Payload::None).await?;
    }
    match route.state {
        Served => Err(ApiError::method_not_allowed()),
        Pending => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            ErrorCode::NotImplemented,
            format!(
                "{} {} is not implemented in this version of cpamp: {} are served by cpamp itself \
                 (never forwarded to CPA) once available",
                request.method(),
                request.path(),
                route.feature
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_entry_is_shadowed_by_an_earlier_one() {
        for (index, route) in OWNED_ROUTES.iter().enumerate() {
            for probe in [route.path.to_string(), format!("{}/", route.path)] {
                let first = owner_of(&probe).expect("covered");
                assert_eq!(
                    first.path, route.path,
                    "{probe} is answered by the earlier entry {}; move entry {index} up",
                    first.path
                );
            }
        }
    }

    #[test]
    fn subtrees_cover_their_children_but_not_their_siblings() {
        let usage = owner_of("/v0/management/usage/anything/deeper").expect("usage");
        assert_eq!(usage.path, "/v0/management/usage");
        assert_eq!(
            owner_of("/v0/management/usage/export").map(|route| route.path),
            Some("/v0/management/usage/export")
        );
        assert_eq!(
            owner_of("/v0/management/usage/import-sessions/abc/chunk").map(|route| route.path),
            Some("/v0/management/usage/import-sessions")
        );
        // CPA's own paths stay with the proxy.
        for path in [
            "/v0/management/usage-statistics-enabled",
            "/v0/management/usage-queue",
            "/v0/management/config",
            "/v0/management/auth-files",
            "/v0/management",
        ] {
            assert!(owner_of(path).is_none(), "{path}");
        }
    }
}
