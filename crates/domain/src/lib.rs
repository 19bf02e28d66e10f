//! cpamp's core: what a usage event is, how a CPA queue payload becomes one,
//! the keys and secrets the server keeps, and the ports (traits) that storage
//! implements and the collector and API program against.
//!
//! Layout:
//! - `event`: [`UsageEvent`], one stored row per upstream attempt.
//! - `decode`: CPA queue payload -> [`event::Decoded`] (event, control message or dead letter).
//! - `transfer`: usage export lines and the import reader (formats, legacy snapshots).
//! - `prices`: model prices, their sync sources and matching, API key aliases.
//! - `ports`: [`ports::EventSink`], [`ports::SettingsStore`], [`ports::GapStore`],
//!   [`ports::DatabaseStats`] and the store error type.
//!
//! Architecture invariant: this crate does no IO. It never opens a file or a
//! socket, never reads the environment or the clock except through arguments.

pub mod analytics;
pub mod automation;
pub mod crypto;
pub mod decode;
pub mod event;
pub mod keys;
pub mod ports;
pub mod prices;
pub mod secret;
pub mod transfer;

pub use event::UsageEvent;
pub use ports::StoreError;
pub use secret::Secret;
