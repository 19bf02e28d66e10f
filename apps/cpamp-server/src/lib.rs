//! The cpamp-server application: configuration, telemetry, the process lock and
//! startup wiring. `main.rs` is the thin CLI on top; black-box tests use the same
//! pieces.

pub mod adoption;
pub mod allocator;
pub mod config;
pub mod data_key;
pub mod demo;
pub mod doctor;
pub mod lock;
pub mod prices;
pub mod priority;
pub mod remote;
pub mod reset;
pub mod startup;
pub mod telemetry;
pub mod transfer;
