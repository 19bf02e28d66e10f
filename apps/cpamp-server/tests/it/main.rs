//! Black-box tests: the real `cpamp-server` binary (and, where a test needs to reach
//! inside, the same `Application` in-process) against real SQLite files.

mod absurd_numbers;
mod analytics;
mod analytics_load;
mod auth;
mod automation;
mod cli;
mod deploy;
mod docs;
mod enrichment;
mod faults;
mod http_limits;
mod ingest;
mod inspection;
mod login_cost;
mod metrics;
mod openapi;
mod owned_routes;
mod plugins;
mod prices;
mod process;
mod proxy;
mod proxy_paths;
mod quota;
mod reset_key;
mod security;
mod setup;
mod status;
mod support;
mod transfer;
mod unavailable;
mod usage_payload;
