//! Account automation rules: what CPA's auth-file listing says about each credential, and
//! how usage events are labelled with it.
//!
//! Layout:
//! - `authfile`: CPA's `GET auth-files` answer → [`authfile::AuthFileEntry`] (identity,
//!   status) and the accepted listing shapes.
//! - `enrich`: the account, label, file, provider and project snapshots copied onto usage
//!   events ([`enrich::AuthSnapshots`]).
//!
//! Everything here is pure: callers fetch the listing and pass the clock in.

pub mod authfile;
pub mod enrich;
