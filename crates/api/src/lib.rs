//! cpamp's HTTP surface: actix-web routes, admin authentication, the JSON error
//! envelope, the CPA management proxy, and the services behind the routes (the CPA
//! connection and its collector, account automation, price sync, export and import,
//! the doctor).
//!
//! Entry point: [`configure`] registers every route on an actix `ServiceConfig`;
//! the binary calls it with its concrete store type and an [`AppState`].
//! [`routes::owned::OWNED_ROUTES`] lists every path the Manager answers itself (the
//! rest goes to CPA after admin authentication) and [`routes::openapi::document`]
//! is the API reference served at `/openapi.json`.
//!
//! Architecture invariants: only this crate knows actix-web and the response JSON;
//! it never sees SQL or sqlx — storage is reached through the domain ports.
//!
//! # Example: the error envelope and the route table
//!
//! ```
//! use actix_web::ResponseError;
//! use actix_web::body::MessageBody;
//! use cpamp_api::routes::{openapi, owned};
//! use cpamp_api::{ApiError, ErrorCode};
//!
//! // Every error is `{"error": message, "code": code}` with a stable code.
//! let response = ApiError::not_configured().error_response();
//! assert_eq!(response.status().as_u16(), 428);
//! let body = response.into_body().try_into_bytes().expect("a complete body");
//! let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
//! assert_eq!(json["code"], ErrorCode::UsageServiceNotConfigured.as_str());
//!
//! // `/v0/management/usage` is answered by the Manager and described in the API
//! // reference; CPA's own management paths are proxied.
//! assert!(owned::owner_of("/v0/management/usage").is_some());
//! assert!(owned::owner_of("/v0/management/config.yaml").is_none());
//! let reference = openapi::document();
//! assert!(reference["paths"]["/v0/management/usage"].is_object());
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod automation;
pub mod connection;
pub mod cpa_client;
pub mod cpa_http;
pub mod doctor;
pub mod error;
pub mod gaps;
pub mod lane;
pub mod limits;
pub mod manager_config;
pub mod middleware;
pub mod monitor;
mod percent;
pub mod plugins;
pub mod price_sync;
pub mod proxy;
pub mod reads;
pub mod routes;
pub mod screen;
pub mod slices;
pub mod state;
pub mod transfer;

pub use error::{ApiError, ErrorCode};
pub use state::{AppState, Store};

/// Registers every cpamp route. `S` is the concrete store the binary picked.
pub fn configure<S: Store>(config: &mut actix_web::web::ServiceConfig) {
    routes::configure::<S>(config);
}
