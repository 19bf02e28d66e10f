//! Moving usage history in and out: the export line formats and the import reader.
//!
//! - `export`: one stored event as an NDJSON line or a CSV row.
//! - `import`: any supported import input into events, with per-record problems.
//!
//! Both are pure: the reader takes any `BufRead`, the writers append to a
//! `String`. Streaming, batching and storage live in the api crate and the binary.

#![warn(missing_docs)]

pub mod export;
pub mod import;
