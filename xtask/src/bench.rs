//! Benchmarks. Each prints a table; only `load` and `steady` fail (on a lost event or
//! an unexpected answer), so CI can run `load --smoke`.
//!
//! - `decode`: CPA payloads decoded per second on one core.
//! - `ingest`: the store's batch insert rate (100 and 1000 events per batch) next to
//!   a raw SQLite bulk insert of the same rows.
//! - `analytics`: dashboard, overview, event-page and selector queries on a synthetic
//!   30-day dataset (100k and 1M events) next to a plain `GROUP BY` baseline, plus
//!   bytes per event and the query process's peak RSS.
//! - `ingest-live`: events/s from the fake CPA into committed SQLite rows per transport
//!   (HTTP queue, RESP pop, SUBSCRIBE) and the resident memory while doing it.
//! - `e2e`: the release binary fed by the fake CPA's HTTP queue with N realistic
//!   events (`--size`, 1M by default; `--live` for a steady stream into today),
//!   then every panel request timed over HTTP with RSS before and after, targets
//!   printed beside the figures (`crates/testkit/examples/e2e_bench.rs`).
//! - `panel`: the dashboard's first meaningful paint in Chromium against the release
//!   server on a 1M-event database, beside an empty one (see `frontend.rs`).
//! - `export`, `import`: the release server's NDJSON and CSV export (events/s, bytes
//!   per event, resident memory at its peak) and the offline and HTTP import of that
//!   file with a byte-for-byte round trip, on `target/bench-transfer-N` filled once by
//!   `fill_synthetic` (`--size N`, 1M by default), beside the `sqlite3` shell reading
//!   and importing the same rows (`crates/testkit/examples/transfer_bench.rs`).
//! - `load [--smoke]`: the release server on a database of 1M realistic events (filled
//!   once into `target/bench-load-1000000`) while the fake CPA emits 5,000 events/s and
//!   100 panels poll the dashboard and monitoring pages, plus a `/status` watchdog:
//!   events lost, unexpected answers, p50/p99 per request beside an unloaded baseline and
//!   the targets, peak RSS (`crates/testkit/examples/load_bench.rs`). Fails on a lost
//!   event or an answer other than 200 or a deliberate 503. `--smoke` (debug build, 20k
//!   events, 10 clients, 500 events/s, 5 s) runs in `cargo xtask ci`.
//! - `steady [--minutes M]`: the release server fed 2,000 events/s for M minutes (60)
//!   from an empty database, its RSS printed every minute; fails on a lost event.
//! - `kills [--events N] [--rate R] [--kills K] [--transports t,..]`: the release server
//!   killed with `SIGKILL` K times (10) at random moments while the fake CPA emits N
//!   events (50,000) at R events/s (500) in each transport, restarted at once each time;
//!   the fake's ledger against the exported history: events lost and duplicated per
//!   transport (targets 0; the run fails otherwise), beside a same-run pass with no kill
//!   (`crates/testkit/examples/kill_bench.rs`).
//! - `disk-full [--runs N] [--debug]`: the release (or debug) server's data directory on a small tmpfs that
//!   is filled so every write fails for 45 s while the fake CPA (retention 60 s) emits
//!   events, then freed; N runs (5) per transport: emitted, stored, lost, duplicated,
//!   the gap rows with their cause, and whether `/status` showed the held events and
//!   the open gap during the outage (`crates/testkit/examples/disk_full_bench.rs`). Needs
//!   root to mount the tmpfs (skipped with a message otherwise); fails on a lost or
//!   duplicated event, a missing `store_failed` gap or a `/status` that hid the outage.
//! - `startup`: time from exec to "listening" and to a first `/health` answer of the
//!   release binary on an empty data directory, and its resident memory then.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xshell::{Shell, cmd};

pub const NAMES: &[&str] = &[
    "analytics",
    "decode",
    "disk-full",
    "e2e",
    "export",
    "import",
    "ingest",
    "ingest-live",
    "kills",
    "load",
    "panel",
    "steady",
    "startup",
];

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
        "analytics" => cmd!(
            shell,
            "cargo run --release --locked -p cpamp-storage --example bench_analytics -- {extra...}"
        )
        .run()
        .map_err(|error| error.to_string()),
        "ingest-live" => cmd!(
            shell,
            "cargo run --release --locked -p cpamp-testkit --example ingest_bench -- {extra...}"
        )
        .run()
        .map_err(|error| error.to_string()),
        "decode" => cmd!(
            shell,
            "cargo run --release --locked -p cpamp-domain --example bench_decode -- {extra...}"
        )
        .run()
        .map_err(|error| error.to_string()),
        "startup" => startup(shell),
        "e2e" => {
            cmd!(shell, "cargo build --release --locked -p cpamp-server")
                .run()
                .map_err(|error| error.to_string())?;
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
            let server = std::path::Path::new(&target)
                .join("release")
                .join("cpamp-server");
            cmd!(
                shell,
                "cargo run --release --locked -p cpamp-testkit --example e2e_bench -- --server {server} {extra...}"
            )
            .run()
            .map_err(|error| error.to_string())
        }
        "panel" => crate::frontend::bench(shell, extra),
        "load" => load(shell, extra),
        "kills" => kills(shell, extra),
        "steady" => steady(shell, extra),
        "disk-full" => disk_full(shell, extra),
        "export" | "import" => transfer(shell, name, extra),
        _ => Err(format!(
            "unknown benchmark {name:?}; one of: {}",
            NAMES.join(", ")
        )),
    }
}

/// Builds the server and the load client (release, or debug for `--smoke`, which CI
/// runs right after the debug test build) and runs the load benchmark.
pub fn load(shell: &Shell, args: &[String]) -> Result<(), String> {
    let smoke = match args {
        [] => false,
        [flag] if flag == "--smoke" => true,
        _ => return Err("usage: cargo xtask bench load [--smoke]".to_string()),
    };
    let (profile, release, size) = if smoke {
        ("debug", None, "20000")
    } else {
        ("release", Some("--release"), "1000000")
    };
    cmd!(
        shell,
        "cargo build {release...} --locked -p cpamp-server -p cpamp-testkit --bin cpamp-server --example load_bench"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let binaries = std::path::Path::new(&target).join(profile);
    let server = binaries.join("cpamp-server");
    let bench = binaries.join("examples/load_bench");
    let source = std::path::Path::new(&target).join(format!("bench-load-{size}"));
    let smoke_flag = smoke.then_some("--smoke");
    cmd!(
        shell,
        "{bench} --server {server} --source {source} --fill {size} {smoke_flag...}"
    )
    .run()
    .map_err(|_| "the load benchmark lost events or got unexpected answers".to_string())
}

fn kills(shell: &Shell, args: &[String]) -> Result<(), String> {
    cmd!(
        shell,
        "cargo build --release --locked -p cpamp-server -p cpamp-testkit --bin cpamp-server --example kill_bench"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let binaries = std::path::Path::new(&target).join("release");
    let server = binaries.join("cpamp-server");
    let bench = binaries.join("examples/kill_bench");
    cmd!(shell, "{bench} --server {server} {args...}")
        .run()
        .map_err(|_| "the kill benchmark lost or duplicated events".to_string())
}

fn steady(shell: &Shell, args: &[String]) -> Result<(), String> {
    let minutes = match args {
        [] => "60".to_string(),
        [flag, value] if flag == "--minutes" && value.parse::<u64>().is_ok() => value.clone(),
        _ => return Err("usage: cargo xtask bench steady [--minutes M]".to_string()),
    };
    cmd!(
        shell,
        "cargo build --release --locked -p cpamp-server -p cpamp-testkit --bin cpamp-server --example load_bench"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let binaries = std::path::Path::new(&target).join("release");
    let server = binaries.join("cpamp-server");
    let bench = binaries.join("examples/load_bench");
    cmd!(shell, "{bench} --server {server} --steady {minutes}")
        .run()
        .map_err(|_| "the steady benchmark lost events".to_string())
}

/// Builds the release server and the disk-full client and runs the benchmark.
fn disk_full(shell: &Shell, args: &[String]) -> Result<(), String> {
    let usage = || "usage: cargo xtask bench disk-full [--runs N] [--debug]".to_string();
    let mut runs = "5".to_string();
    let mut debug = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--runs" => match rest.next() {
                Some(value) if value.parse::<u64>().is_ok() => runs = value.clone(),
                _ => return Err(usage()),
            },
            // The figures are counts, not speeds: a debug build measures the same thing.
            "--debug" => debug = true,
            _ => return Err(usage()),
        }
    }
    let (profile, release) = if debug {
        ("debug", None)
    } else {
        ("release", Some("--release"))
    };
    cmd!(
        shell,
        "cargo build {release...} --locked -p cpamp-server -p cpamp-testkit --bin cpamp-server --example disk_full_bench"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let binaries = std::path::Path::new(&target).join(profile);
    let server = binaries.join("cpamp-server");
    let bench = binaries.join("examples/disk_full_bench");
    cmd!(shell, "{bench} --server {server} --runs {runs}")
        .run()
        .map_err(|_| {
            "the disk-full benchmark lost or duplicated events, or an outage went unreported"
                .to_string()
        })
}

fn transfer(shell: &Shell, name: &str, args: &[String]) -> Result<(), String> {
    let mut size = "1000000".to_string();
    let mut list = args.iter();
    while let Some(arg) = list.next() {
        match arg.as_str() {
            "--size" => {
                size = list.next().ok_or("--size needs a value")?.replace('_', "");
            }
            other => return Err(format!("unknown option {other:?}; use --size N")),
        }
    }
    size.parse::<u64>()
        .map_err(|_| format!("--size {size:?} is not a number"))?;
    cmd!(
        shell,
        "cargo build --release --locked -p cpamp-server -p cpamp-storage -p cpamp-testkit --bin cpamp-server --example fill_synthetic --example transfer_bench"
    )
    .run()
    .map_err(|error| error.to_string())?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let release = std::path::Path::new(&target).join("release");
    let source = std::path::Path::new(&target).join(format!("bench-transfer-{size}"));
    std::fs::create_dir_all(&source).map_err(|error| format!("{}: {error}", source.display()))?;
    let fill = release.join("examples/fill_synthetic");
    let database = source.join("usage.sqlite");
    cmd!(shell, "{fill} {database} {size}")
        .run()
        .map_err(|error| error.to_string())?;
    let bench = release.join("examples/transfer_bench");
    let server = release.join("cpamp-server");
    cmd!(shell, "{bench} {name} --server {server} --source {source}")
        .run()
        .map_err(|error| error.to_string())
}

fn startup(shell: &Shell) -> Result<(), String> {
    cmd!(shell, "cargo build --release --locked -p cpamp-server")
        .run()
        .map_err(|error| error.to_string())?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let binary = std::path::Path::new(&target)
        .join("release")
        .join("cpamp-server");
    let runs = 9;
    let mut listening = Vec::new();
    let mut healthy = Vec::new();
    let mut rss_kib = Vec::new();
    for run in 0..runs {
        let data =
            std::env::temp_dir().join(format!("cpamp-bench-startup-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let started = Instant::now();
        let mut child = Command::new(&binary)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("USAGE_DATA_DIR", &data)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("spawn {}: {error}", binary.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        // Keep draining stderr on a thread so the server never writes into a closed pipe.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = sender.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
        });
        let addr = receiver
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "server did not report its address")?;
        listening.push(started.elapsed());
        loop {
            if let Ok(mut stream) = TcpStream::connect(&addr) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream
                    .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut response = String::new();
                let _ = stream.read_to_string(&mut response);
                if response.starts_with("HTTP/1.1 200") {
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("server never answered /health".into());
            }
        }
        healthy.push(started.elapsed());
        rss_kib.push(read_rss_kib(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&data);
    }
    listening.sort();
    healthy.sort();
    rss_kib.sort_unstable();
    println!("startup benchmark: release binary, empty data directory, {runs} runs (median / max)");
    println!("{:<32} {:>10} {:>10}", "measure", "median", "max");
    println!(
        "{:<32} {:>8.1}ms {:>8.1}ms",
        "exec -> listening",
        ms(listening[runs / 2]),
        ms(listening[runs - 1])
    );
    println!(
        "{:<32} {:>8.1}ms {:>8.1}ms",
        "exec -> first /health 200",
        ms(healthy[runs / 2]),
        ms(healthy[runs - 1])
    );
    println!(
        "{:<32} {:>8.1}MB {:>8.1}MB",
        "resident memory after start",
        rss_kib[runs / 2] as f64 / 1024.0,
        rss_kib[runs - 1] as f64 / 1024.0
    );
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn read_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0)
}
