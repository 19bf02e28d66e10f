//! Benchmarks. Each prints a table; none is a pass/fail test.
//!
//! - `ingest`: the store's batch insert rate (100 and 1000 events per batch) next to
//!   a raw SQLite bulk insert of the same rows.

use xshell::{Shell, cmd};

pub const NAMES: &[&str] = &["ingest"];

pub fn run(shell: &Shell, args: &[String]) -> Result<(), String> {
    let name = args.first().map(String::as_str).unwrap_or("");
    let extra = &args[args.len().min(1)..];
    match name {
        "ingest" => cmd!(
            shell,
            "cargo run --release --locked -p cpamp-storage --example bench_ingest -- {extra...}"
        )
        .run()
        .map_err(|error| error.to_string()),
        _ => Err(format!(
            "unknown benchmark {name:?}; one of: {}",
            NAMES.join(", ")
        )),
    }
}
