//! cpamp's HTTP surface: actix-web routes, admin authentication, the JSON error
//! envelope, and (later) the CPA management proxy.
//!
//! Entry point: [`configure`] registers every route on an actix `ServiceConfig`;
//! the binary calls it with its concrete store type and an [`AppState`].
//!
//! Architecture invariants: only this crate knows actix-web and the response JSON;
//! it never sees SQL or sqlx — storage is reached through the domain ports.

pub mod auth;
pub mod automation;
pub mod connection;
pub mod cpa_client;
pub mod cpa_http;
pub mod doctor;
pub mod error;
pub mod gaps;
pub mod limits;
pub mod manager_config;
pub mod middleware;
pub mod monitor;
pub mod plugins;
pub mod price_sync;
pub mod proxy;
pub mod routes;
pub mod state;
pub mod transfer;

pub use error::{ApiError, ErrorCode};
pub use state::{AppState, Store};

/// Registers every cpamp route. `S` is the concrete store the binary picked.
pub fn configure<S: Store>(config: &mut actix_web::web::ServiceConfig) {
    routes::configure::<S>(config);
}
