//! Export and import benchmarks: the release server's NDJSON export and the
//! offline import of that file, on a database of N synthetic events, each beside a
//! raw SQLite baseline measured in the same run.
//!
//! `cargo xtask bench export [--size N]` and `cargo xtask bench import [--size N]`
//! (xtask builds the release binary and `fill_synthetic`, fills
//! `target/bench-transfer-N/usage.sqlite` once and passes `--server`, `--source`).
//!
//! - `export`: `GET /v0/management/usage/export` streamed and counted, for the newest
//!   100,000 events and for all N, with events/s, bytes per event and the server's
//!   resident memory before and at its peak during the download (sampled every 5 ms;
//!   flat memory at both sizes is the constant-memory claim). Baseline: the stock
//!   `sqlite3` shell writing the same table's rows as JSON (`-json`, no joins).
//! - `import`: `cpamp-server import FILE` into an empty data directory with the
//!   server stopped (events/s, peak RSS), `POST /v0/management/usage/import` of the
//!   first 50,000 lines into a running empty server and the same body again (all
//!   skipped), then the imported database exported again and compared byte for byte
//!   with the original export, and the panel's aggregates over the whole range (the
//!   dashboard summary and every monitoring section) compared between the original
//!   and the imported copy. Baseline: the `sqlite3` shell's `.import --csv` of
//!   the same events (the CSV export) into one flat table.
//!
//! Figures depend on the machine's load: the header prints the load average.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark prints its table and stops on a broken setup"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "shared/server.rs"]
mod server;

const ADMIN_KEY: &str = "transfer-bench-admin-key-0123456789";
/// Lines posted to the HTTP import (the body limit is 64 MiB).
const HTTP_LINES: usize = 50_000;

struct Args {
    server: PathBuf,
    source: PathBuf,
    what: String,
}

fn args() -> Args {
    let mut out = Args {
        server: PathBuf::from("target/release/cpamp-server"),
        source: PathBuf::new(),
        what: String::new(),
    };
    let mut list = std::env::args().skip(1);
    while let Some(arg) = list.next() {
        let mut value = || list.next().expect("a value after the option");
        match arg.as_str() {
            "--server" => out.server = PathBuf::from(value()),
            "--source" => out.source = PathBuf::from(value()),
            "export" | "import" => out.what = arg,
            other => panic!(
                "unknown argument {other:?}; use export|import --server PATH --source DATA_DIR"
            ),
        }
    }
    assert!(
        !out.what.is_empty() && out.source.join("usage.sqlite").exists(),
        "usage: transfer_bench export|import --server PATH --source DATA_DIR (holding usage.sqlite)"
    );
    out
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Samples a process's resident memory every 5 ms until dropped; `peak` is the
/// largest sample.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        RssSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

struct Server {
    child: Child,
    base: String,
    client: reqwest::blocking::Client,
}

impl Server {
    fn start(binary: &Path, data: &Path) -> Server {
        let (child, base) = server::spawn(
            binary,
            &[
                ("USAGE_DATA_DIR", data.as_os_str()),
                ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY.as_ref()),
                ("RUST_LOG", "info".as_ref()),
            ],
        );
        Server {
            child,
            base,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(3600))
                .build()
                .expect("client"),
        }
    }

    fn rss_mib(&self) -> f64 {
        rss_kib(self.child.id()) as f64 / 1024.0
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// One timed export: events, bytes, seconds, RSS before and peak during.
struct Exported {
    events: u64,
    bytes: u64,
    seconds: f64,
    rss_before_mib: f64,
    rss_peak_mib: f64,
}

impl Exported {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Streams an export and counts it; `out` also keeps it in a file.
fn export(server: &Server, query: &str, out: Option<&Path>) -> Exported {
    let rss_before_mib = server.rss_mib();
    let sampler = RssSampler::start(server.child.id());
    let started = Instant::now();
    let mut response = server
        .client
        .get(format!("{}/v0/management/usage/export{query}", server.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("export request");
    assert_eq!(response.status().as_u16(), 200, "export answered");
    // A CSV export starts with its header row, which is no event.
    let header_rows = u64::from(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/csv")),
    );
    let mut file = out.map(|out| {
        std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(out).expect("create the export file"),
        )
    });
    let mut buffer = vec![0_u8; 1 << 16];
    let (mut bytes, mut events) = (0_u64, 0_u64);
    loop {
        let read = response.read(&mut buffer).expect("read the export");
        if read == 0 {
            break;
        }
        bytes += read as u64;
        events += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
        if let Some(file) = file.as_mut() {
            file.write_all(&buffer[..read])
                .expect("write the export file");
        }
    }
    if let Some(file) = file.as_mut() {
        file.flush().expect("flush");
    }
    let seconds = started.elapsed().as_secs_f64();
    Exported {
        events: events.saturating_sub(header_rows),
        bytes,
        seconds,
        rss_before_mib,
        rss_peak_mib: sampler.finish(),
    }
}

/// The stock `sqlite3` shell writing every row of the events table as JSON;
/// `None` when the shell is not installed.
fn raw_export(database: &Path, limit: Option<u64>) -> Option<(u64, u64, f64)> {
    let sql = match limit {
        Some(limit) => format!(
            "SELECT * FROM (SELECT * FROM usage_events ORDER BY timestamp_ms DESC, id DESC LIMIT {limit}) ORDER BY timestamp_ms, id"
        ),
        None => "SELECT * FROM usage_events ORDER BY timestamp_ms, id".to_string(),
    };
    let started = Instant::now();
    let mut child = Command::new("sqlite3")
        .args(["-readonly", "-json"])
        .arg(database)
        .arg(sql)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let mut buffer = vec![0_u8; 1 << 16];
    let (mut bytes, mut rows) = (0_u64, 0_u64);
    loop {
        let read = stdout.read(&mut buffer).ok()?;
        if read == 0 {
            break;
        }
        bytes += read as u64;
        rows += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    child.wait().ok()?.success().then_some(())?;
    Some((rows, bytes, started.elapsed().as_secs_f64()))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn run_export(args: &Args) {
    let database = args.source.join("usage.sqlite");
    let server = Server::start(&args.server, &args.source);
    // Warm the page cache so the first measured export is not the only cold one.
    export(&server, "?limit=100000", None);
    println!(
        "export benchmark: release server, {} synthetic events, load average {}",
        args.source.display(),
        load_average()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "measure", "events", "events/s", "seconds", "B/event", "RSS MiB", "peak MiB"
    );
    let mut full_rate = 0.0;
    for (label, query) in [
        ("NDJSON export, newest 100k", "?limit=100000"),
        ("NDJSON export, all", ""),
        ("CSV export, all", "?format=csv"),
    ] {
        let result = export(&server, query, None);
        if query.is_empty() {
            full_rate = result.rate();
        }
        println!(
            "{:<34} {:>10} {:>10.0} {:>9.2} {:>9.0} {:>10.1} {:>10.1}",
            label,
            result.events,
            result.rate(),
            result.seconds,
            result.bytes as f64 / result.events.max(1) as f64,
            result.rss_before_mib,
            result.rss_peak_mib
        );
    }
    server.stop();
    for (label, limit) in [
        ("baseline: sqlite3 -json, 100k", Some(100_000)),
        ("baseline: sqlite3 -json, all", None),
    ] {
        match raw_export(&database, limit) {
            Some((rows, bytes, seconds)) => println!(
                "{:<34} {:>10} {:>10.0} {:>9.2} {:>9.0} {:>10} {:>10}",
                label,
                rows,
                rows as f64 / seconds,
                seconds,
                bytes as f64 / rows.max(1) as f64,
                "-",
                "-"
            ),
            None => println!("{label:<34} skipped (no sqlite3 shell)"),
        }
    }
    println!(
        "target: >= 200,000 events/s in constant memory; all-events export at {:.0}/s ({})",
        full_rate,
        if full_rate >= 200_000.0 {
            "met"
        } else {
            "missed on this run"
        }
    );
}

fn peak_of_command(command: &mut Command) -> (bool, f64, f64, String) {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let sampler = RssSampler::start(child.id());
    let output = child.wait_with_output().expect("wait");
    let seconds = started.elapsed().as_secs_f64();
    let peak = sampler.finish();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), seconds, peak, text)
}

fn files_equal(left: &Path, right: &Path) -> bool {
    let (Ok(a), Ok(b)) = (std::fs::File::open(left), std::fs::File::open(right)) else {
        return false;
    };
    if a.metadata().map(|m| m.len()).ok() != b.metadata().map(|m| m.len()).ok() {
        return false;
    }
    let (mut a, mut b) = (
        BufReader::with_capacity(1 << 20, a),
        BufReader::with_capacity(1 << 20, b),
    );
    loop {
        let (left, right) = (a.fill_buf().expect("read"), b.fill_buf().expect("read"));
        let n = left.len().min(right.len());
        if n == 0 {
            return left.len() == right.len();
        }
        if left[..n] != right[..n] {
            return false;
        }
        a.consume(n);
        b.consume(n);
    }
}

/// Prints the first line where two exports differ.
fn first_difference(left: &Path, right: &Path) {
    let lines = |path: &Path| BufReader::new(std::fs::File::open(path).expect("open")).lines();
    for (number, (a, b)) in lines(left).zip(lines(right)).enumerate() {
        let (a, b) = (a.expect("read"), b.expect("read"));
        if a != b {
            println!(
                "first difference at line {}:\n  export:    {a}\n  re-export: {b}",
                number + 1
            );
            return;
        }
    }
    println!("one export is a prefix of the other");
}

/// The first and last `timestamp_ms` of an export file (oldest first).
fn time_range(export: &Path) -> (i64, i64) {
    let timestamp = |line: &str| -> i64 {
        let value: serde_json::Value = serde_json::from_str(line).expect("an export line");
        value["timestamp_ms"].as_i64().expect("timestamp_ms")
    };
    let mut lines = BufReader::new(std::fs::File::open(export).expect("open export"))
        .lines()
        .map_while(Result::ok);
    let first = lines.next().expect("a first line");
    let last = lines.last().unwrap_or_else(|| first.clone());
    (timestamp(&first), timestamp(&last))
}

/// Drops what differs between two runs by design: the time an answer was computed
/// and the client fields that are never exported.
fn strip_generated(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|key, _| {
                !key.starts_with("generated_at")
                    && !matches!(key.as_str(), "client_ip" | "x_forwarded_for" | "user_agent")
            });
            members.values_mut().for_each(strip_generated);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_generated),
        _ => {}
    }
}

/// The panel's aggregates over `[from_ms, to_ms)`: the dashboard summary and the
/// monitoring sections (API-key stats and channel share are left out: they name
/// the identity fields of an arbitrary row of each group).
fn aggregates(server: &Server, from_ms: i64, to_ms: i64) -> Vec<serde_json::Value> {
    let mut dashboard: serde_json::Value = server
        .client
        .get(format!(
            "{}/v0/management/dashboard/summary?today_start_ms={from_ms}&now_ms={to_ms}",
            server.base
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("dashboard request")
        .json()
        .expect("dashboard JSON");
    let body = serde_json::json!({
        "from_ms": from_ms, "to_ms": to_ms, "time_zone": "UTC",
        "include": {"granularity": "day", "summary": true, "summary_percentiles": true, "timeline": true,
                    "model_stats": true, "model_share": true, "failure_sources": true,
                    "account_stats": true, "credential_stats": true,
                    "hourly_distribution": true, "heatmap": true, "task_buckets": true,
                    "recent_failures": 20, "events_page": {"limit": 50}}
    });
    let response = server
        .client
        .post(format!(
            "{}/v0/management/monitoring/analytics",
            server.base
        ))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("analytics request");
    assert_eq!(response.status().as_u16(), 200, "analytics answered");
    let mut analytics: serde_json::Value = response.json().expect("analytics JSON");
    strip_generated(&mut dashboard);
    strip_generated(&mut analytics);
    vec![dashboard, analytics]
}

fn run_import(args: &Args, work: &Path) {
    let database = args.source.join("usage.sqlite");
    let original = work.join("original.jsonl");
    let csv = work.join("original.csv");
    let server = Server::start(&args.server, &args.source);
    let exported = export(&server, "", Some(&original));
    export(&server, "?format=csv", Some(&csv));
    server.stop();
    let events = exported.events;

    println!(
        "import benchmark: release binary, {} events ({:.0} MiB NDJSON), load average {}",
        events,
        mib(exported.bytes),
        load_average()
    );
    println!(
        "{:<44} {:>10} {:>10} {:>9} {:>10}",
        "measure", "events", "events/s", "seconds", "peak MiB"
    );

    // Offline: the server is stopped and the CLI opens the data directory itself.
    let target = work.join("imported");
    std::fs::create_dir_all(&target).expect("target dir");
    let (ok, seconds, peak, text) = peak_of_command(
        Command::new(&args.server)
            .arg("import")
            .arg(&original)
            .env("USAGE_DATA_DIR", &target)
            .env("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)
            .env("RUST_LOG", "warn"),
    );
    assert!(ok, "cpamp-server import failed: {text}");
    println!(
        "{:<44} {:>10} {:>10.0} {:>9.2} {:>10.1}",
        "cpamp-server import (offline), all",
        events,
        events as f64 / seconds,
        seconds,
        peak
    );
    let offline_rate = events as f64 / seconds;

    // Through the API: the first 50,000 lines, twice (the second adds nothing).
    let slice: String = {
        let file = BufReader::new(std::fs::File::open(&original).expect("open export"));
        let mut text = String::new();
        for line in file.lines().take(HTTP_LINES) {
            text.push_str(&line.expect("line"));
            text.push('\n');
        }
        text
    };
    let lines = slice.lines().count();
    let fresh = work.join("http");
    std::fs::create_dir_all(&fresh).expect("http dir");
    let server = Server::start(&args.server, &fresh);
    for label in [
        "POST /usage/import, 50k lines",
        "POST /usage/import, same lines again",
    ] {
        let sampler = RssSampler::start(server.child.id());
        let started = Instant::now();
        let response = server
            .client
            .post(format!("{}/v0/management/usage/import", server.base))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/x-ndjson")
            .body(slice.clone())
            .send()
            .expect("import request");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().unwrap_or_default();
        let seconds = started.elapsed().as_secs_f64();
        let peak = sampler.finish();
        assert_eq!(status, 200, "import answered {body}");
        println!(
            "{:<44} {:>10} {:>10.0} {:>9.2} {:>10.1}   added {} skipped {}",
            label,
            lines,
            lines as f64 / seconds,
            seconds,
            peak,
            body["added"],
            body["skipped"]
        );
    }
    server.stop();

    // The baseline: a flat table filled from the same events by the sqlite3 shell.
    let raw = work.join("raw.sqlite");
    let (ok, seconds, _, text) = peak_of_command(
        Command::new("sqlite3")
            .arg(&raw)
            .arg(format!(".import --csv {} raw_events", csv.display())),
    );
    if ok {
        println!(
            "{:<44} {:>10} {:>10.0} {:>9.2} {:>10}",
            "baseline: sqlite3 .import --csv (flat table)",
            events,
            events as f64 / seconds,
            seconds,
            "-"
        );
    } else {
        println!("baseline skipped: {}", text.trim());
    }

    // Round trip: the imported copy exports the same bytes.
    let (from_ms, last_ms) = time_range(&original);
    let to_ms = last_ms + 1;
    let server = Server::start(&args.server, &target);
    let again = work.join("again.jsonl");
    let second = export(&server, "", Some(&again));
    let imported_aggregates = aggregates(&server, from_ms, to_ms);
    server.stop();
    let server = Server::start(&args.server, &args.source);
    let original_aggregates = aggregates(&server, from_ms, to_ms);
    server.stop();
    let same_aggregates = imported_aggregates == original_aggregates;
    let identical = files_equal(&original, &again);
    if !identical {
        first_difference(&original, &again);
    }
    println!(
        "round trip: {} events exported, imported offline, exported again: {} events, bytes {}",
        events,
        second.events,
        if identical { "identical" } else { "DIFFERENT" }
    );
    println!(
        "round trip: dashboard summary and monitoring analytics over the whole range: {}",
        if same_aggregates {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    println!(
        "target: import >= 50,000 events/s; offline import at {:.0}/s ({}); source database {}",
        offline_rate,
        if offline_rate >= 50_000.0 {
            "met"
        } else {
            "missed on this run"
        },
        database.display()
    );
}

fn main() {
    let args = args();
    let work = tempfile::tempdir().expect("work dir");
    match args.what.as_str() {
        "export" => run_export(&args),
        _ => run_import(&args, work.path()),
    }
}
