//! Route table. Order matters where prefixes overlap (see server-core.md §6.1):
//! exact local routes first, then local `/v0/management/*` prefixes, then the CPA
//! management proxy, then the panel and the root redirect.

mod accounts;
mod aliases;
mod analytics;
mod automation;
mod health;
mod inspection;
mod metrics;
pub mod openapi;
pub mod owned;
mod panel;
pub mod prices;
mod quota;
mod service;
mod setup;
pub mod status;
pub mod transfer;

pub use analytics::{dashboard_request, monitoring_request};
pub use panel::PanelPath;

use actix_web::{HttpResponse, web};

use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::state::Store;

/// A resource at `path` and `path/` whose other methods answer 405 after the admin key.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource([path.to_string(), format!("{path}/")]).default_service(web::to(
        |_auth: AdminAuth| async { Err::<HttpResponse, _>(ApiError::method_not_allowed()) },
    ))
}

/// Registers every route. Each module owns one resource.
pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    // First the routes polled all the time (watchdogs, panels), all exact paths: routing
    // tries resources in order and matches a path with parameters by a regular
    // expression, so a polled request never pays for the others' patterns.
    health::configure(config);
    status::configure::<S>(config);
    analytics::configure::<S>(config);
    transfer::configure::<S>(config);
    prices::configure::<S>(config);
    aliases::configure::<S>(config);
    automation::configure::<S>(config);
    inspection::configure::<S>(config);
    quota::configure::<S>(config);
    service::configure::<S>(config);
    setup::configure::<S>(config);
    metrics::configure::<S>(config);
    panel::configure(config);
    openapi::configure(config);
    // After every resource module: the fallbacks of all Manager-owned paths, so none
    // of them ever reaches the proxy.
    owned::configure(config);
    // Last: the CPA proxy is the default service, so every local route above wins.
    crate::proxy::configure::<S>(config);
}
