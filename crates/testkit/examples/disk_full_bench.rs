//! Disk-full benchmark: the release server's data directory on a small tmpfs that is
//! filled while the fake CPA (queue retention 60 s) keeps emitting events, so every
//! SQLite write fails for 45 s; then the space is freed. Per transport and run it
//! reports what CPA emitted, what reached the database, what was lost or duplicated,
//! the collection gaps recorded (cause and detail), and what `/status` showed during
//! the outage.
//!
//! `cargo xtask bench disk-full` builds the binaries and runs
//! ```text
//! disk_full_bench --server target/release/cpamp-server [--runs 5] [--outage 45] [--rate 50]
//!                 [--transports http,resp,subscribe]
//! ```
//! Mounting the tmpfs needs root (`mount -t tmpfs -o size=64m`); without it the
//! benchmark says so and exits 0 without measuring. It exits non-zero when an event was
//! lost or duplicated, when a run recorded no `store_failed` gap naming the full disk, or
//! when `/status` did not show the held events during the outage.
//!
//! One run: the server starts on an empty data directory on a fresh 64 MiB tmpfs and
//! collects while R events/s (50) are emitted; after 5 s a filler file takes every free
//! byte. The outage clock starts when `/status` first reports the store's error (SQLite
//! reuses its WAL's space for a while, so the first refusal comes a few seconds after
//! the fill) and the filler is deleted O seconds (45) later. Emitting goes on for 10 s
//! more, then the run waits until everything emitted is stored (or 120 s pass), stops the
//! server with SIGTERM and compares the fake CPA's ledger with the rows in the file.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark prints its table and stops on a broken setup"
)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpamp_testkit::{EmittedEvent, FakeCpa, FakeCpaOptions};
use serde_json::Value;
use sqlx::Connection as _;

#[path = "shared/server.rs"]
mod server;

const ADMIN_KEY: &str = "disk-full-bench-admin-key-0123456789";
const CPA_KEY: &str = "disk-full-bench-management-key";
const RETENTION: Duration = Duration::from_secs(60);
const TMPFS_SIZE: &str = "64m";
const WARM_UP: Duration = Duration::from_secs(5);
const AFTER_RECOVERY: Duration = Duration::from_secs(10);

struct Args {
    server: PathBuf,
    runs: usize,
    outage: Duration,
    rate: u64,
    transports: Vec<String>,
}

fn args() -> Args {
    let mut out = Args {
        server: PathBuf::from("target/release/cpamp-server"),
        runs: 5,
        outage: Duration::from_secs(45),
        rate: 50,
        transports: vec!["http".into(), "resp".into(), "subscribe".into()],
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => out.server = PathBuf::from(value),
            "--runs" => out.runs = value.parse().expect("--runs N"),
            "--outage" => out.outage = Duration::from_secs(value.parse().expect("--outage S")),
            "--rate" => out.rate = value.parse().expect("--rate R"),
            "--transports" => out.transports = value.split(',').map(str::to_string).collect(),
            other => panic!("unknown option {other}"),
        }
    }
    out
}

/// A tmpfs mounted for one run, unmounted (and its mount point removed) on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE},mode=0700")])
            .arg("tmpfs")
            .arg(&dir)
            .output()
            .map_err(|error| format!("run mount: {error}"))?;
        if !output.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Writes zeros into `path` until the file system refuses; returns the bytes taken.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let mut taken = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let block = vec![0u8; chunk];
        while file.write_all(&block).is_ok() {
            taken += chunk as u64;
        }
    }
    let _ = file.sync_all();
    taken
}

/// What `/status` showed while the store refused writes.
#[derive(Default, Clone)]
struct Seen {
    /// Highest `collector.heldItems` seen while `storeError` was set.
    max_held: u64,
    /// A `storeError` was shown.
    store_error: String,
    /// `lastError` while failing.
    last_error: String,
    /// `gaps.open` was true with a `store_failed` gap among the recent ones.
    gap_open: bool,
    /// That gap was shown from memory (`recorded: false`).
    gap_unrecorded: bool,
    /// `/status` answered while failing / did not.
    answered: u32,
    unanswered: u32,
}

fn status(client: &reqwest::blocking::Client, base: &str) -> Option<Value> {
    let response = client
        .get(format!("{base}/status"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .ok()?;
    response
        .status()
        .is_success()
        .then(|| response.json().ok())
        .flatten()
}

fn observe(seen: &mut Seen, value: Option<&Value>) -> bool {
    let Some(value) = value else {
        seen.unanswered += 1;
        return false;
    };
    seen.answered += 1;
    let collector = &value["collector"];
    let store_error = collector["storeError"].as_str().unwrap_or("");
    if store_error.is_empty() {
        return false;
    }
    seen.store_error = store_error.to_string();
    seen.last_error = collector["lastError"].as_str().unwrap_or("").to_string();
    seen.max_held = seen
        .max_held
        .max(collector["heldItems"].as_u64().unwrap_or(0));
    let gaps = value["gaps"]["recent"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if value["gaps"]["open"] == true {
        for gap in gaps
            .iter()
            .filter(|gap| gap["open"] == true && gap["cause"] == "store_failed")
        {
            seen.gap_open = true;
            if gap["recorded"] == false {
                seen.gap_unrecorded = true;
            }
        }
    }
    true
}

struct RunResult {
    transport: String,
    run: usize,
    emitted: usize,
    stored: i64,
    lost: usize,
    duplicated: usize,
    fill_to_failure: Duration,
    outage: Duration,
    seen: Seen,
    gaps: Vec<(String, String)>,
    passed: bool,
}

/// Emits `rate` events/s in 100 ms steps until `stop`.
fn feeder(
    runtime: tokio::runtime::Handle,
    cpa: Arc<FakeCpa>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Vec<EmittedEvent>>>,
    rate: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if due > sent {
                let count = usize::try_from(due - sent).unwrap_or(usize::MAX);
                let emitted = runtime.block_on(cpa.emit(count));
                ledger.lock().unwrap().extend(emitted);
                sent = due;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

async fn stored_and_gaps(db: &Path) -> (BTreeMap<String, i64>, Vec<(String, String)>) {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open the database");
    let rows: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT request_id, COUNT(*) FROM usage_events GROUP BY request_id")
            .fetch_all(&mut connection)
            .await
            .expect("count stored events");
    let gaps: Vec<(String, String)> =
        sqlx::query_as("SELECT cause, detail FROM collection_gaps ORDER BY id")
            .fetch_all(&mut connection)
            .await
            .expect("read gaps");
    let _ = connection.close().await;
    (
        rows.into_iter()
            .map(|(id, count)| (id.unwrap_or_default(), count))
            .collect(),
        gaps,
    )
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn one_run(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    transport: &str,
    run: usize,
    tmpfs: &Tmpfs,
) -> RunResult {
    let data = tmpfs.dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.retention = RETENTION;
    let cpa = Arc::new(runtime.block_on(FakeCpa::start(options)).expect("fake CPA"));
    let retention = RETENTION.as_secs().to_string();
    let (mut child, base) = server::spawn(
        &args.server,
        &[
            ("USAGE_DATA_DIR", data.as_os_str()),
            ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY.as_ref()),
            ("CPA_UPSTREAM_URL", cpa.base_url().as_ref()),
            ("CPA_MANAGEMENT_KEY", CPA_KEY.as_ref()),
            ("USAGE_COLLECTOR_MODE", transport.as_ref()),
            ("CPA_QUEUE_RETENTION_SECONDS", retention.as_ref()),
            (
                "RUST_LOG",
                "warn,cpa_manager_plus=info,cpamp_server=info".as_ref(),
            ),
        ],
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    if transport == "subscribe" {
        let deadline = Instant::now() + Duration::from_secs(20);
        while cpa.subscriber_count() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let ledger = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = feeder(
        runtime.handle().clone(),
        cpa.clone(),
        stop.clone(),
        ledger.clone(),
        args.rate,
    );
    std::thread::sleep(WARM_UP);

    let filler = tmpfs.dir.join("filler");
    let filled_at = Instant::now();
    fill(&filler);
    let mut seen = Seen::default();
    // The outage starts with the first refused write the server reports.
    let failing_since = loop {
        let value = status(&client, &base);
        if observe(&mut seen, value.as_ref()) {
            break Some(Instant::now());
        }
        if filled_at.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let fill_to_failure = filled_at.elapsed();
    if let Some(since) = failing_since {
        while since.elapsed() < args.outage {
            let value = status(&client, &base);
            observe(&mut seen, value.as_ref());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let outage = failing_since.map_or(Duration::ZERO, |since| since.elapsed());
    std::fs::remove_file(&filler).expect("free the space");
    std::thread::sleep(AFTER_RECOVERY);
    stop.store(true, Ordering::Relaxed);
    feeding.join().expect("feeder");
    let emitted = std::mem::take(&mut *ledger.lock().unwrap());
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for event in &emitted {
        *expected.entry(event.request_id.clone()).or_insert(0) += 1;
    }
    let total: i64 = expected.values().sum();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let count = status(&client, &base)
            .and_then(|value| value["eventCount"].as_i64())
            .unwrap_or(0);
        if count >= total {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Gap rows are written a moment after the store recovers.
    std::thread::sleep(Duration::from_secs(2));
    terminate(&mut child);
    cpa.stop();
    let db = data.join("usage.sqlite");
    let (stored, gaps) = runtime.block_on(stored_and_gaps(&db));
    let lost: usize = expected
        .iter()
        .map(|(id, count)| (count - stored.get(id).copied().unwrap_or(0)).max(0) as usize)
        .sum();
    let duplicated: usize = stored
        .iter()
        .map(|(id, count)| (count - expected.get(id).copied().unwrap_or(0)).max(0) as usize)
        .sum();
    let store_gap = gaps.iter().any(|(cause, detail)| {
        cause == "store_failed" && (detail.contains("full") || detail.contains("space"))
    });
    let passed = failing_since.is_some()
        && lost == 0
        && duplicated == 0
        && store_gap
        && seen.max_held > 0
        && seen.gap_open;
    RunResult {
        transport: transport.to_string(),
        run,
        emitted: emitted.len(),
        stored: stored.values().sum(),
        lost,
        duplicated,
        fill_to_failure,
        outage,
        seen,
        gaps,
        passed,
    }
}

fn main() -> ExitCode {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let root = std::env::temp_dir().join(format!("cpamp-bench-disk-full-{}", std::process::id()));
    let mut results = Vec::new();
    let started = Instant::now();
    for transport in &args.transports {
        for run in 1..=args.runs {
            let tmpfs = match Tmpfs::mount(root.join(format!("{transport}-{run}"))) {
                Ok(tmpfs) => tmpfs,
                Err(error) => {
                    println!(
                        "disk-full benchmark skipped: cannot mount a tmpfs ({error}); it needs root \
                         (mount -t tmpfs -o size={TMPFS_SIZE})"
                    );
                    let _ = std::fs::remove_dir_all(&root);
                    return ExitCode::SUCCESS;
                }
            };
            let result = one_run(&args, &runtime, transport, run, &tmpfs);
            drop(tmpfs);
            eprintln!(
                "{transport} run {run}: emitted {}, stored {}, lost {}, duplicated {} ({:.0} s so far)",
                result.emitted,
                result.stored,
                result.lost,
                result.duplicated,
                started.elapsed().as_secs_f64()
            );
            results.push(result);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    print_table(&args, &results);
    if results.iter().all(|result| result.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_table(args: &Args, results: &[RunResult]) {
    println!(
        "\nDisk full for {} s (from the first refused write) with CPA's retention at {} s, {} events/s, \
         {TMPFS_SIZE} tmpfs\n",
        args.outage.as_secs(),
        RETENTION.as_secs(),
        args.rate
    );
    println!(
        "| transport | run | emitted | stored | lost | dup | fill→refusal s | outage s | /status held (max) | \
         /status gap open (from memory) | gap rows (cause: detail) | ok |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for result in results {
        let gaps = result
            .gaps
            .iter()
            .map(|(cause, detail)| {
                // The end of the detail names the cause (the store's own words).
                let chars: Vec<char> = detail.chars().collect();
                let tail: String = chars[chars.len().saturating_sub(80)..].iter().collect();
                let ellipsis = if chars.len() > 80 { "…" } else { "" };
                format!("{cause}: {ellipsis}{tail}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {} |",
            result.transport,
            result.run,
            result.emitted,
            result.stored,
            result.lost,
            result.duplicated,
            result.fill_to_failure.as_secs_f64(),
            result.outage.as_secs_f64(),
            if result.seen.max_held > 0 {
                format!("yes ({})", result.seen.max_held)
            } else {
                "no".to_string()
            },
            match (result.seen.gap_open, result.seen.gap_unrecorded) {
                (true, true) => "yes (yes)",
                (true, false) => "yes (no)",
                _ => "no",
            },
            gaps,
            if result.passed { "yes" } else { "NO" },
        );
    }
    let lost: usize = results.iter().map(|result| result.lost).sum();
    let duplicated: usize = results.iter().map(|result| result.duplicated).sum();
    let emitted: usize = results.iter().map(|result| result.emitted).sum();
    println!("\nTotal: {emitted} emitted, {lost} lost, {duplicated} duplicated.");
    if let Some(result) = results
        .iter()
        .find(|result| !result.seen.store_error.is_empty())
    {
        println!(
            "/status during the outage (first run): lastError {:?}; answered {} of {} polls",
            result.seen.last_error,
            result.seen.answered,
            result.seen.answered + result.seen.unanswered
        );
    }
}
