//! Account automation rules: what CPA's auth-file listing says about each credential,
//! how usage events are labelled with it, which failures put a credential in a quota
//! cooldown or the account-action queue, and the ports that keep their state.
//!
//! Layout:
//! - `authfile`: CPA's `GET auth-files` answer → [`authfile::AuthFileEntry`] (identity,
//!   status) and the accepted listing shapes.
//! - `enrich`: the account, label, file, provider and project snapshots copied onto usage
//!   events ([`enrich::AuthSnapshots`]).
//! - `cooldown`: quota-cooldown triggers ([`cooldown::detect`]).
//! - `credential_policy`: which authentication failures become account-action candidates.
//! - `jsonscan`: JSON values inside failure text, reset times in their many spellings.
//! - `store`: the automation ports (cooldowns, candidates, audit log).
//! - `inspection`: server inspection's configuration, probe verdicts and quota windows.
//! - `quota`: quota snapshot observations and their port.
//! - `runs`: inspection runs, results, logs, lease and ownership, and their port.
//!
//! Everything here is pure: callers fetch from CPA and pass the clock in.

pub mod authfile;
pub mod cooldown;
pub mod credential_policy;
pub mod enrich;
pub mod inspection;
pub mod jsonscan;
pub mod quota;
pub mod runs;
pub mod store;
