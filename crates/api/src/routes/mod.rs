//! Route table. Order matters where prefixes overlap (see server-core.md §6.1):
//! exact local routes first, then local `/v0/management/*` prefixes, then the CPA
//! management proxy, then the panel and the root redirect.

mod analytics;
mod health;
mod panel;

pub use panel::PanelPath;

use actix_web::web;

use crate::state::Store;

/// Registers every route. Each module owns one resource.
#[allow(
    clippy::extra_unused_type_parameters,
    reason = "store-backed resources register here with S"
)]
pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    health::configure(config);
    analytics::configure::<S>(config);
    panel::configure(config);
}
