//! cpamp's core: what a usage event is, how a CPA queue payload becomes one,
//! the keys and secrets the server keeps, and the ports (traits) that storage
//! implements and the collector and API program against.
//!
//! Layout:
//! - `event`: [`UsageEvent`], one stored row per upstream attempt.
//! - `decode`: CPA queue payload -> [`event::Decoded`] (event, control message or dead letter).
//! - `analytics`: the dashboard, monitoring and account-history answers built from the
//!   rows storage returns, the read-time cost engine ([`analytics::cost::PriceBook`]) and
//!   the [`analytics::query::AnalyticsStore`] port.
//! - `automation`: account automation rules (CPA's auth-file listing, quota cooldowns,
//!   the account-action policy, server inspection, quota snapshots) and their ports.
//! - `transfer`: usage export lines and the import reader (formats, legacy snapshots).
//! - `prices`: model prices, their sync sources and matching, API key aliases.
//! - `keys`: the admin key (generation, argon2id hashing, checking); `crypto`: the data
//!   key and the sealing of stored secrets; `secret`: [`Secret`], a string whose `Debug`
//!   never shows it.
//! - `ports`: [`ports::EventSink`], [`ports::SettingsStore`], [`ports::GapStore`],
//!   [`ports::DatabaseStats`] and the store error type.
//!
//! Every public item is documented with its unit and time base: timestamps are Unix
//! milliseconds (UTC) unless a field says it is local to a requested time zone, costs
//! are US dollars, price rates are per million tokens, and rates and shares are
//! fractions from 0 to 1.
//!
//! Architecture invariant: this crate does no IO. It never opens a file or a
//! socket, never reads the environment or the clock except through arguments.
//!
//! # Example: decode a CPA usage payload and price it
//!
//! One item of CPA's usage queue becomes a [`UsageEvent`]; its token sums, priced with a
//! [`PriceBook`](analytics::cost::PriceBook) (rates per million tokens), give its cost.
//!
//! ```
//! use std::collections::HashMap;
//!
//! use cpamp_domain::analytics::Metrics;
//! use cpamp_domain::analytics::cost::{Band, PriceBook, context_band};
//! use cpamp_domain::event::Decoded;
//! use cpamp_domain::prices::{ModelPrice, Rate, Rates};
//!
//! let payload = br#"{"timestamp":"2026-08-22T14:00:31Z","model":"claude-sonnet-4",
//!     "request_id":"r-1","provider":"claude","failed":false,
//!     "tokens":{"input_tokens":1200,"output_tokens":300,"total_tokens":1500}}"#;
//! let now_ms = 1_787_407_231_000; // the caller's clock: the crate reads none itself
//! let Decoded::Event(event) = cpamp_domain::decode::decode(payload, now_ms) else {
//!     panic!("a usage payload decodes to an event");
//! };
//! assert_eq!(event.model, "claude-sonnet-4");
//! assert_eq!(event.request_id.as_deref(), Some("r-1"));
//!
//! // $3 per million input tokens, $15 per million output tokens.
//! let rates = Rates {
//!     prompt: Rate::set(3.0),
//!     completion: Rate::set(15.0),
//!     ..Rates::default()
//! };
//! let book = PriceBook::new(HashMap::from([(
//!     "claude-sonnet-4".to_string(),
//!     ModelPrice::with_rates(rates),
//! )]));
//! let sums = Metrics {
//!     calls: 1,
//!     input: event.normalized.total_input,
//!     output: event.tokens.output,
//!     total: event.tokens.total,
//!     ..Metrics::default()
//! };
//! let band = Band {
//!     model: &event.model,
//!     billing_model: &event.model,
//!     service_tier: "",
//!     context_band: context_band(sums.input),
//! };
//! let cost = book.band_cost(band, &sums).expect("the model has a price");
//! assert!((cost - (1200.0 * 3.0 + 300.0 * 15.0) / 1e6).abs() < 1e-12);
//!
//! // A model without a price has an unknown cost, never a cost of zero.
//! let unpriced = Band { billing_model: "unknown-model", model: "unknown-model", ..band };
//! assert_eq!(book.band_cost(unpriced, &sums), None);
//! ```

#![warn(missing_docs)]

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
