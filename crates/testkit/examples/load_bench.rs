//! Load benchmark: the release server under many analytics clients while the fake CPA
//! emits events, on a database already holding N realistic events.
//!
//! `cargo xtask bench load [--smoke]` builds the binaries and runs
//! ```text
//! load_bench --server target/release/cpamp-server --source target/bench-load-1000000 --fill 1000000
//! ```
//! `--fill N` first fills the source database (once; it is reused across runs) with N
//! payloads of the fake CPA's realistic generator (`cpamp_testkit::Traffic`) spread
//! evenly over the 30 days before now, decoded and stored through the store's batch
//! writer as the collector stores them. The source is copied for each run.
//!
//! - C clients (100; `--smoke`: 10), half polling the dashboard and half monitoring
//!   analytics with the panel's request bodies, each from its own loopback address, for
//!   S seconds (30; smoke 5) and at most 10,000 requests each; they are asynchronous
//!   and share one thread, so the load generator does not take the CPU the server is
//!   measured on (100 blocking clients used more CPU than the server);
//! - the fake CPA emits R events/s (5,000; smoke 500) over its HTTP queue, kept below
//!   CPA's queue size, counting what it drops;
//! - one client asks `/status` every 50 ms, and the server's RSS is sampled every 100 ms.
//!
//! Reported beside the targets: events lost, answers by class (200, deliberate 503,
//! anything else), p50/p99 of answered dashboard and monitoring requests and of
//! `/status`, peak RSS; the baseline rows are the same requests one at a time with no
//! ingest, measured first in the same run. Everything is on loopback and bounded in
//! time. The exit status is non-zero when an event was lost or a request got anything
//! but 200 or a deliberate 503 (`server_busy` with `Retry-After`).
//!
//! `--steady M`: no clients; an empty database fed R events/s (2,000) for M minutes,
//! the server's RSS printed every minute, then events lost.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark prints its table and stops on a broken setup"
)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpamp_domain::event::Decoded;
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch, StoreStats};
use cpamp_storage::{Options, SqliteStore};
use cpamp_testkit::{FakeCpa, FakeCpaOptions, Traffic};
use serde_json::{Value, json};

#[path = "shared/server.rs"]
mod server;

const ADMIN_KEY: &str = "load-bench-admin-key-0123456789";
const CPA_KEY: &str = "load-bench-management-key";
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The fake CPA's queue is kept below this, like a CPA whose consumer keeps up.
const QUEUE_CAP: usize = 20_000;
/// Most requests one client sends.
const MAX_REQUESTS_PER_CLIENT: u64 = 10_000;
/// The time zone the clients' panels run in.
const TIME_ZONE: &str = "UTC";

struct Args {
    server: PathBuf,
    source: PathBuf,
    fill: Option<u64>,
    clients: usize,
    seconds: u64,
    rate: u64,
    steady_minutes: Option<u64>,
}

fn args() -> Args {
    let mut out = Args {
        server: PathBuf::from("target/release/cpamp-server"),
        source: PathBuf::from("target/bench-load-1000000"),
        fill: None,
        clients: 100,
        seconds: 30,
        rate: 5_000,
        steady_minutes: None,
    };
    let mut rate = None;
    let mut list = std::env::args().skip(1);
    while let Some(arg) = list.next() {
        let mut value = || list.next().expect("a value after the option");
        match arg.as_str() {
            "--server" => out.server = PathBuf::from(value()),
            "--source" => out.source = PathBuf::from(value()),
            "--fill" => out.fill = Some(value().replace('_', "").parse().expect("--fill N")),
            "--clients" => out.clients = value().parse().expect("--clients C"),
            "--seconds" => out.seconds = value().parse().expect("--seconds S"),
            "--rate" => rate = Some(value().parse().expect("--rate R")),
            "--steady" => out.steady_minutes = Some(value().parse().expect("--steady M")),
            "--smoke" => {
                out.clients = 10;
                out.seconds = 5;
                out.rate = 500;
            }
            other => panic!(
                "unknown option {other:?}; use --server PATH, --source DIR, --fill N, --clients C, --seconds S, --rate R, --smoke, --steady M"
            ),
        }
    }
    if out.steady_minutes.is_some() {
        out.rate = 2_000;
    }
    if let Some(rate) = rate {
        out.rate = rate;
    }
    out
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fills `source/usage.sqlite` up to `count` realistic events over the 30 days before
/// now, decoded and stored in batches of 1,000 as the collector stores them.
async fn fill(source: &Path, count: u64) {
    std::fs::create_dir_all(source).expect("source dir");
    let path = source.join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("open the source database");
    let stored = u64::try_from(store.counts().await.expect("count").events).unwrap_or(0);
    if stored >= count {
        store.close().await;
        return;
    }
    let missing = count - stored;
    eprintln!(
        "filling {} with {missing} realistic events over 30 days",
        path.display()
    );
    let started = Instant::now();
    let now = now_ms();
    let from_ms = now - 30 * DAY_MS;
    let span_ns = i128::from(now - from_ms) * 1_000_000;
    // Another seed for a top-up, so it adds new events rather than duplicates.
    let mut traffic = Traffic::new(0x10ad_f111 ^ stored);
    let origin = BatchOrigin::Collector("http://127.0.0.1:8317".to_string());
    let mut index = 0u64;
    while index < missing {
        let mut batch = IngestBatch {
            origin: origin.clone(),
            events: Vec::with_capacity(1_000),
            dead_letters: Vec::new(),
        };
        for _ in 0..1_000.min(missing - index) {
            let offset = span_ns * i128::from(index) / i128::from(missing);
            let nanos = i128::from(from_ms) * 1_000_000 + offset + i128::from(index % 997) * 1_003;
            match cpamp_domain::decode::decode(&traffic.payload(nanos), now) {
                Decoded::Event(event) => batch.events.push(*event),
                Decoded::Dead(dead) => batch.dead_letters.push(dead),
                _ => {}
            }
            index += 1;
        }
        store.store_batch(batch).await.expect("store a batch");
        if index.is_multiple_of(100_000) {
            eprintln!(
                "  {index}/{missing} in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    store.close().await;
    eprintln!(
        "filled {missing} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn start_server(binary: &Path, data: &Path, cpa: &str) -> (Child, String) {
    server::spawn(
        binary,
        &[
            ("USAGE_DATA_DIR", data.as_os_str()),
            ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY.as_ref()),
            ("CPA_UPSTREAM_URL", cpa.as_ref()),
            ("CPA_MANAGEMENT_KEY", CPA_KEY.as_ref()),
            ("USAGE_COLLECTOR_MODE", "http".as_ref()),
            ("USAGE_BATCH_SIZE", "1000".as_ref()),
            ("USAGE_POLL_INTERVAL_MS", "50".as_ref()),
            (
                "RUST_LOG",
                "warn,cpa_manager_plus=info,cpamp_server=info".as_ref(),
            ),
        ],
    )
}

fn client_from(address: IpAddr) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(address)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A panel's (or the watchdog's) connection, from its own loopback address. The timed
/// clients are asynchronous: a blocking client hands every request to a runtime thread
/// of its own and back, and 100 of them spent more CPU than the server they measured.
fn async_client_from(address: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// The requests the panel's dashboard and monitoring pages send, plus `/status`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Dashboard: `GET dashboard/summary` for today.
    Dashboard,
    /// Dashboard: today's API key table (`monitoring/analytics`, `api_key_stats`).
    DashboardKeys,
    /// Monitoring: the main query of the default "today" view.
    Monitoring,
    /// Monitoring: the filter selectors of the same range.
    Selectors,
    /// Monitoring: the collection gaps of the same range.
    Gaps,
    /// `GET /status`.
    Status,
}

const KINDS: [Kind; 6] = [
    Kind::Dashboard,
    Kind::DashboardKeys,
    Kind::Monitoring,
    Kind::Selectors,
    Kind::Gaps,
    Kind::Status,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Dashboard => "dashboard summary",
            Kind::DashboardKeys => "dashboard key table",
            Kind::Monitoring => "monitoring today",
            Kind::Selectors => "monitoring selectors",
            Kind::Gaps => "monitoring gaps",
            Kind::Status => "/status",
        }
    }

    fn index(self) -> usize {
        KINDS.iter().position(|kind| *kind == self).unwrap_or(0)
    }

    fn target_ms(self) -> f64 {
        if self == Kind::Status { 10.0 } else { 100.0 }
    }
}

/// What a request of `kind` at `now` got: the status, whether a 503 said when to
/// retry, and how long it took.
async fn request(client: &reqwest::Client, base: &str, kind: Kind, now: i64) -> (u16, bool, f64) {
    let started = Instant::now();
    let today = now - now.rem_euclid(DAY_MS);
    let analytics = |include: Value, filters: bool| {
        let mut body = json!({
            "from_ms": today,
            "to_ms": now + 1,
            "now_ms": now,
            "time_zone": TIME_ZONE,
            "include": include,
        });
        if filters {
            body["filters"] = json!({});
        }
        client
            .post(format!("{base}/v0/management/monitoring/analytics"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    let sent = match kind {
        Kind::Dashboard => client
            .get(format!(
                "{base}/v0/management/dashboard/summary?today_start_ms={today}&now_ms={now}&top_models=5&recent_failures=5"
            ))
            .bearer_auth(ADMIN_KEY)
            .send(),
        Kind::DashboardKeys => analytics(json!({"api_key_stats": true}), false),
        Kind::Monitoring => analytics(
            json!({"summary": true, "summary_profile": "compact", "timeline": true, "granularity": "hour"}),
            true,
        ),
        Kind::Selectors => analytics(
            json!({"filter_options": true, "filter_selectors": true}),
            true,
        ),
        Kind::Gaps => client
            .get(format!(
                "{base}/v0/management/collector-gaps?startMs={today}&endMs={}&limit=500",
                now + 1
            ))
            .bearer_auth(ADMIN_KEY)
            .send(),
        Kind::Status => client.get(format!("{base}/status")).bearer_auth(ADMIN_KEY).send(),
    };
    let (status, retry_after) = match sent.await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let _ = response.bytes().await;
            (status, retry_after)
        }
        Err(_) => (0, false),
    };
    (
        status,
        retry_after,
        started.elapsed().as_secs_f64() * 1000.0,
    )
}

fn percentile(values: &mut [f64], share: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * share).round() as usize;
    values[index.min(values.len() - 1)]
}

fn stored(client: &reqwest::blocking::Client, base: &str) -> u64 {
    client
        .get(format!("{base}/status"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .ok()
        .and_then(|response| response.json::<Value>().ok())
        .and_then(|status| status["eventCount"].as_u64())
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    refused_ms: Vec<f64>,
    ok: u64,
    refused: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, (status, retry_after, ms): (u16, bool, f64)) {
        match status {
            200 => {
                self.ok += 1;
                self.latencies.push(ms);
            }
            503 if retry_after => {
                self.refused += 1;
                self.refused_ms.push(ms);
            }
            _ => self.failed += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.refused_ms.extend(other.refused_ms);
        self.ok += other.ok;
        self.refused += other.refused;
        self.failed += other.failed;
    }
}

fn tallies() -> Vec<Tally> {
    KINDS.iter().map(|_| Tally::default()).collect()
}

/// Feeds the fake CPA `rate` events/s in 10 ms steps until `stop`, within CPA's queue
/// bound; returns the events it could not offer (queue full).
fn feeder(
    cpa: Arc<FakeCpa>,
    stop: Arc<AtomicBool>,
    pushed: Arc<AtomicU64>,
    rate: u64,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut traffic = Traffic::new(0x10ad);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut dropped = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                if cpa.queued_len() < QUEUE_CAP {
                    cpa.push_raw(traffic.payload(jiff::Timestamp::now().as_nanosecond()));
                    pushed.fetch_add(1, Ordering::Relaxed);
                } else {
                    dropped += 1;
                }
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        dropped
    })
}

/// Waits (at most a minute) until the server has stored `expected` events; returns
/// how many it stored.
fn settle(probe: &reqwest::blocking::Client, base: &str, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now_stored = stored(probe, base);
    while now_stored < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        now_stored = stored(probe, base);
    }
    now_stored
}

fn main() -> ExitCode {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(count) = args.fill {
        runtime.block_on(fill(&args.source, count));
    }
    let data = std::env::temp_dir().join(format!("cpamp-bench-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");
    if args.steady_minutes.is_none() {
        for name in ["usage.sqlite", "usage.sqlite-wal"] {
            let from = args.source.join(name);
            if from.exists() {
                std::fs::copy(&from, data.join(name)).expect("copy the filled database");
            }
        }
    }
    let options = FakeCpaOptions::new(CPA_KEY);
    let cpa = Arc::new(runtime.block_on(FakeCpa::start(options)).expect("fake CPA"));
    let (mut child, base) = start_server(&args.server, &data, &cpa.base_url());
    let pid = child.id();
    let probe = client_from(IpAddr::from([127, 0, 0, 1]));
    let passed = match args.steady_minutes {
        Some(minutes) => steady(&args, &cpa, pid, &base, &probe, minutes),
        None => load(&args, &cpa, pid, &base, &probe),
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The load run; true when no event was lost and no request got an unexpected answer.
fn load(
    args: &Args,
    cpa: &Arc<FakeCpa>,
    pid: u32,
    base: &str,
    probe: &reqwest::blocking::Client,
) -> bool {
    let initial = stored(probe, base);
    let idle_rss = rss_kib(pid, "VmRSS:");

    // The panels' runtime: one thread drives every panel connection.
    let panels = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("panels")
        .enable_all()
        .build()
        .expect("panels runtime");

    // Baseline: each request alone, no ingest.
    let mut baseline = tallies();
    {
        let alone = async_client_from(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..5 {
            for kind in KINDS {
                let outcome = panels.block_on(request(&alone, base, kind, now_ms()));
                baseline[kind.index()].add(outcome);
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let feeder = feeder(
        Arc::clone(cpa),
        Arc::clone(&stop),
        Arc::clone(&pushed),
        args.rate,
    );
    // The RSS sampler.
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    // `/status` every 50 ms, as a watchdog would: a process of its own elsewhere, here
    // a thread with a runtime of its own.
    let status_probe = {
        let base = base.to_string();
        std::thread::spawn(move || {
            let watchdog = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("watchdog runtime");
            let client = async_client_from(IpAddr::from([127, 0, 2, 1]));
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                tally.add(watchdog.block_on(request(&client, &base, Kind::Status, now_ms())));
                std::thread::sleep(Duration::from_millis(50));
            }
            tally
        })
    };
    // Panels: half on the dashboard (summary, key table), half on monitoring (main
    // query, gaps, and the selectors every tenth round), each asking again as soon as
    // it has its answers (a second after a 503, as its `Retry-After` says).
    let clients: Vec<_> = (0..args.clients)
        .map(|index| {
            let base = base.to_string();
            let rounds: &'static [Kind] = if index % 2 == 0 {
                &[Kind::Dashboard, Kind::DashboardKeys]
            } else {
                &[Kind::Monitoring, Kind::Gaps]
            };
            let octet = u8::try_from(index % 250 + 1).unwrap_or(1);
            panels.spawn(async move {
                let client = async_client_from(IpAddr::from([127, 0, 1, octet]));
                let mut tally = tallies();
                let mut sent = 0u64;
                let mut round = 0u64;
                'run: while Instant::now() < deadline {
                    let selectors = (rounds[0] == Kind::Monitoring && round.is_multiple_of(10))
                        .then_some(Kind::Selectors);
                    for kind in rounds.iter().copied().chain(selectors) {
                        if Instant::now() >= deadline || sent >= MAX_REQUESTS_PER_CLIENT {
                            break 'run;
                        }
                        let outcome = request(&client, &base, kind, now_ms()).await;
                        sent += 1;
                        tally[kind.index()].add(outcome);
                        if outcome.0 == 503 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    round += 1;
                }
                tally
            })
        })
        .collect();
    let mut loaded = tallies();
    for client in clients {
        let tally = panels.block_on(client).expect("client");
        for (total, tally) in loaded.iter_mut().zip(tally) {
            total.merge(tally);
        }
    }
    loaded[Kind::Status.index()].merge(status_probe.join().expect("status probe"));
    stop.store(true, Ordering::Relaxed);
    let not_offered = feeder.join().expect("feeder");
    let peak_rss = sampler.join().expect("sampler");
    let pushed = pushed.load(Ordering::Relaxed);
    // Every pushed event must be stored.
    let now_stored = settle(probe, base, initial + pushed);
    let lost = (initial + pushed).saturating_sub(now_stored) + cpa.lost_events();
    let hwm = rss_kib(pid, "VmHWM:");

    println!(
        "\nload: {} clients for {} s, {} events/s offered, database of {initial} events (load average {})",
        args.clients,
        args.seconds,
        args.rate,
        load_average()
    );
    println!(
        "| {:<38} | {:>8} | {:>6} | {:>9} | {:>5} | {:>9} | {:>9} | {:>8} |",
        "request", "answered", "503", "503 p99ms", "other", "p50 ms", "p99 ms", "target"
    );
    println!(
        "|{:-<40}|{:->10}|{:->8}|{:->11}|{:->7}|{:->11}|{:->11}|{:->10}|",
        "", "", "", "", "", "", "", ""
    );
    let row = |name: String, tally: &mut Tally, target: String| {
        let p50 = percentile(&mut tally.latencies, 0.5);
        let p99 = percentile(&mut tally.latencies, 0.99);
        let refused_p99 = percentile(&mut tally.refused_ms, 0.99);
        println!(
            "| {name:<38} | {:>8} | {:>6} | {refused_p99:>9.1} | {:>5} | {p50:>9.1} | {p99:>9.1} | {target:>8} |",
            tally.ok, tally.refused, tally.failed
        );
    };
    for kind in KINDS {
        row(
            format!("{} (baseline, alone)", kind.name()),
            &mut baseline[kind.index()],
            "-".to_string(),
        );
    }
    let mut misses = Vec::new();
    for kind in KINDS {
        let tally = &mut loaded[kind.index()];
        let p99 = percentile(&mut tally.latencies, 0.99);
        if p99.is_nan() || p99 > kind.target_ms() {
            misses.push(format!("{} p99 {p99:.1} ms", kind.name()));
        }
        row(
            format!("{} under load", kind.name()),
            tally,
            format!("<= {}", kind.target_ms()),
        );
    }
    let unexpected: u64 = loaded
        .iter()
        .chain(baseline.iter())
        .map(|tally| tally.failed)
        .sum();
    println!(
        "\nevents: {pushed} emitted into CPA's queue, {not_offered} not offered (queue full: ingest fell behind), {} stored, {lost} lost (target 0)",
        now_stored.saturating_sub(initial)
    );
    println!(
        "RSS: {:.1} MiB idle, {:.1} MiB peak sampled, {:.1} MiB high-water mark (target <= 64 MiB)",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "answers other than 200 or a deliberate 503 with Retry-After: {unexpected} (target 0)"
    );
    if hwm > 64 * 1024 {
        misses.push(format!("peak RSS {:.1} MiB", hwm as f64 / 1024.0));
    }
    if not_offered > 0 {
        misses.push(format!("{not_offered} events not offered"));
    }
    if misses.is_empty() {
        println!("every target met");
    } else {
        println!("targets missed: {}", misses.join(", "));
    }
    let passed = lost == 0 && unexpected == 0;
    if !passed {
        println!("FAILED: {lost} events lost, {unexpected} unexpected answers");
    }
    passed
}

/// The steady run: `rate` events/s into an empty database for `minutes`, RSS every
/// minute; true when no event was lost.
fn steady(
    args: &Args,
    cpa: &Arc<FakeCpa>,
    pid: u32,
    base: &str,
    probe: &reqwest::blocking::Client,
    minutes: u64,
) -> bool {
    let initial = stored(probe, base);
    let idle_rss = rss_kib(pid, "VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let feeder = feeder(
        Arc::clone(cpa),
        Arc::clone(&stop),
        Arc::clone(&pushed),
        args.rate,
    );
    println!(
        "steady ingest: {} events/s for {minutes} min into an empty database; RSS at start {:.1} MiB",
        args.rate,
        idle_rss as f64 / 1024.0
    );
    println!(
        "| {:>6} | {:>10} | {:>10} | {:>9} | {:>9} | {:>14} |",
        "minute", "emitted", "stored", "RSS MiB", "peak MiB", "load average"
    );
    println!(
        "|{:->8}|{:->12}|{:->12}|{:->11}|{:->11}|{:->16}|",
        "", "", "", "", "", ""
    );
    let started = Instant::now();
    let mut peak = idle_rss;
    let mut rows = Vec::new();
    for minute in 1..=minutes {
        let due = started + Duration::from_secs(60 * minute);
        while Instant::now() < due {
            peak = peak.max(rss_kib(pid, "VmRSS:"));
            std::thread::sleep(Duration::from_secs(1));
        }
        let rss = rss_kib(pid, "VmRSS:");
        peak = peak.max(rss);
        rows.push(rss);
        println!(
            "| {minute:>6} | {:>10} | {:>10} | {:>9.1} | {:>9.1} | {:>14} |",
            pushed.load(Ordering::Relaxed),
            stored(probe, base).saturating_sub(initial),
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            load_average()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let not_offered = feeder.join().expect("feeder");
    let pushed = pushed.load(Ordering::Relaxed);
    let now_stored = settle(probe, base, initial + pushed);
    let lost = (initial + pushed).saturating_sub(now_stored) + cpa.lost_events();
    let hwm = rss_kib(pid, "VmHWM:");
    let last_half = &rows[rows.len() / 2..];
    println!(
        "\nevents: {pushed} emitted, {not_offered} not offered (queue full), {} stored, {lost} lost (target 0)",
        now_stored.saturating_sub(initial)
    );
    println!(
        "RSS: {:.1} MiB at start, high-water mark {:.1} MiB (target < 64 MiB); second half of the run {:.1}..{:.1} MiB",
        idle_rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        last_half.iter().min().copied().unwrap_or(0) as f64 / 1024.0,
        last_half.iter().max().copied().unwrap_or(0) as f64 / 1024.0,
    );
    lost == 0
}
