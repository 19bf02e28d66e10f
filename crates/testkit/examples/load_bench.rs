//! Load benchmark: the release server under many analytics clients while the fake CPA
//! emits events, on a database already holding N events (`fill_synthetic`).
//!
//! ```text
//! cargo build --release -p cpamp-server -p cpamp-storage -p cpamp-testkit \
//!     --bin cpamp-server --example fill_synthetic --example load_bench
//! target/release/examples/fill_synthetic target/bench-load-1000000/usage.sqlite 1000000
//! target/release/examples/load_bench --server target/release/cpamp-server \
//!     --source target/bench-load-1000000 [--smoke]
//! ```
//! (`--smoke` wants a small source, e.g. 20,000 events). The source is copied, so
//! the filled database is reused across runs.
//!
//! - C clients (100; `--smoke`: 10), half polling the dashboard and half monitoring
//!   analytics, each from its own loopback address, for S seconds (30; smoke 5);
//! - the fake CPA emits R events/s (5,000; smoke 500) over its HTTP queue, kept below
//!   CPA's queue size, counting what it drops;
//! - one client asks `/status` every 50 ms, and the server's RSS is sampled every 100 ms.
//!
//! Reported beside the targets: events lost, answers by class (200, deliberate 503,
//! other 5xx), p50/p99 of answered dashboard and monitoring requests and of `/status`,
//! peak RSS; the baseline row is the same requests one at a time with no ingest, measured
//! first in the same run. Everything is on loopback and bounded in time.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark prints its table and stops on a broken setup"
)]

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpamp_testkit::{FakeCpa, FakeCpaOptions, Traffic};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "load-bench-admin-key-0123456789";
const CPA_KEY: &str = "load-bench-management-key";
const HOUR_MS: i64 = 3_600_000;
/// The fake CPA's queue is kept below this, like a CPA whose consumer keeps up.
const QUEUE_CAP: usize = 20_000;

struct Args {
    server: PathBuf,
    source: PathBuf,
    clients: usize,
    seconds: u64,
    rate: u64,
}

fn args() -> Args {
    let mut out = Args {
        server: PathBuf::from("target/release/cpamp-server"),
        source: PathBuf::from("target/bench-load-1000000"),
        clients: 100,
        seconds: 30,
        rate: 5_000,
    };
    let mut list = std::env::args().skip(1);
    while let Some(arg) = list.next() {
        let mut value = || list.next().expect("a value after the option");
        match arg.as_str() {
            "--server" => out.server = PathBuf::from(value()),
            "--source" => out.source = PathBuf::from(value()),
            "--clients" => out.clients = value().parse().expect("--clients C"),
            "--seconds" => out.seconds = value().parse().expect("--seconds S"),
            "--rate" => out.rate = value().parse().expect("--rate R"),
            "--smoke" => {
                out.clients = 10;
                out.seconds = 5;
                out.rate = 500;
            }
            other => panic!(
                "unknown option {other:?}; use --server PATH, --source DIR, --clients C, --seconds S, --rate R, --smoke"
            ),
        }
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

fn start_server(binary: &Path, data: &Path, cpa: &str) -> (Child, String) {
    let mut child = Command::new(binary)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("USAGE_DATA_DIR", data)
        .env("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)
        .env("CPA_UPSTREAM_URL", cpa)
        .env("CPA_MANAGEMENT_KEY", CPA_KEY)
        .env("USAGE_COLLECTOR_MODE", "http")
        .env("USAGE_BATCH_SIZE", "1000")
        .env("USAGE_POLL_INTERVAL_MS", "50")
        .env("RUST_LOG", "warn,cpa_manager_plus=info,cpamp_server=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
    let stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = sender.send(rest.split_whitespace().next().unwrap_or("").to_string());
            } else if line.contains("ERROR") {
                eprintln!("server: {line}");
            }
        }
    });
    let addr = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("the server reports its address");
    (child, format!("http://{addr}"))
}

fn client_from(address: IpAddr) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(address)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

#[derive(Clone, Copy)]
enum Kind {
    Dashboard,
    Monitoring,
}

/// One request of `kind` at `now`; its status and how long it took.
fn request(client: &reqwest::blocking::Client, base: &str, kind: Kind, now: i64) -> (u16, f64) {
    let started = Instant::now();
    let sent = match kind {
        Kind::Dashboard => {
            let today = now - now.rem_euclid(24 * HOUR_MS);
            client
                .get(format!(
                    "{base}/v0/management/dashboard/summary?today_start_ms={today}&top_models=5&recent_failures=5"
                ))
                .bearer_auth(ADMIN_KEY)
                .send()
        }
        Kind::Monitoring => client
            .post(format!("{base}/v0/management/monitoring/analytics"))
            .bearer_auth(ADMIN_KEY)
            .json(&monitoring_body(now))
            .send(),
    };
    let status = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes();
            status
        }
        Err(_) => 0,
    };
    (status, started.elapsed().as_secs_f64() * 1000.0)
}

/// What the monitoring page asks for its default view (the last 24 hours).
fn monitoring_body(now: i64) -> Value {
    let minute = now - now.rem_euclid(60_000);
    json!({
        "from_ms": minute - 24 * HOUR_MS,
        "to_ms": minute,
        "include": {"summary": true, "timeline": true, "models": true, "channel_share": true},
    })
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
    ok: u64,
    refused: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, status: u16, ms: f64) {
        match status {
            200 => {
                self.ok += 1;
                self.latencies.push(ms);
            }
            503 => self.refused += 1,
            _ => self.failed += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.refused += other.refused;
        self.failed += other.failed;
    }
}

fn main() {
    let args = args();
    let data = std::env::temp_dir().join(format!("cpamp-bench-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("data dir");
    for name in ["usage.sqlite", "usage.sqlite-wal"] {
        let from = args.source.join(name);
        if from.exists() {
            std::fs::copy(&from, data.join(name)).expect("copy the filled database");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let options = FakeCpaOptions::new(CPA_KEY);
    let cpa = Arc::new(runtime.block_on(FakeCpa::start(options)).expect("fake CPA"));
    let (mut child, base) = start_server(&args.server, &data, &cpa.base_url());
    let pid = child.id();
    let probe = client_from(IpAddr::from([127, 0, 0, 1]));
    let initial = stored(&probe, &base);
    let idle_rss = rss_kib(pid, "VmRSS:");

    // Baseline: each request alone, no ingest.
    let mut baseline = [Tally::default(), Tally::default(), Tally::default()];
    for _ in 0..5 {
        let now = now_ms();
        let (status, ms) = request(&probe, &base, Kind::Dashboard, now);
        baseline[0].add(status, ms);
        let (status, ms) = request(&probe, &base, Kind::Monitoring, now);
        baseline[1].add(status, ms);
        let started = Instant::now();
        let status = probe
            .get(format!("{base}/status"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .map(|response| response.status().as_u16())
            .unwrap_or(0);
        baseline[2].add(status, started.elapsed().as_secs_f64() * 1000.0);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);

    // The feeder: R events/s in 10 ms steps, with CPA's queue bound.
    let feeder = {
        let (cpa, stop, pushed) = (Arc::clone(&cpa), Arc::clone(&stop), Arc::clone(&pushed));
        let rate = args.rate;
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
    };
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
    // `/status` every 50 ms.
    let status_probe = {
        let base = base.clone();
        std::thread::spawn(move || {
            let client = client_from(IpAddr::from([127, 0, 2, 1]));
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let started = Instant::now();
                let status = client
                    .get(format!("{base}/status"))
                    .bearer_auth(ADMIN_KEY)
                    .send()
                    .map(|response| {
                        let status = response.status().as_u16();
                        let _ = response.bytes();
                        status
                    })
                    .unwrap_or(0);
                tally.add(status, started.elapsed().as_secs_f64() * 1000.0);
                std::thread::sleep(Duration::from_millis(50));
            }
            tally
        })
    };
    let clients: Vec<_> = (0..args.clients)
        .map(|index| {
            let base = base.clone();
            let kind = if index % 2 == 0 {
                Kind::Dashboard
            } else {
                Kind::Monitoring
            };
            let octet = u8::try_from(index % 250 + 1).unwrap_or(1);
            std::thread::spawn(move || {
                let client = client_from(IpAddr::from([127, 0, 1, octet]));
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    let (status, ms) = request(&client, &base, kind, now_ms());
                    tally.add(status, ms);
                    if status == 503 {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                (kind, tally)
            })
        })
        .collect();
    let mut dashboard = Tally::default();
    let mut monitoring = Tally::default();
    for client in clients {
        let (kind, tally) = client.join().expect("client");
        match kind {
            Kind::Dashboard => dashboard.merge(tally),
            Kind::Monitoring => monitoring.merge(tally),
        }
    }
    let mut status = status_probe.join().expect("status probe");
    stop.store(true, Ordering::Relaxed);
    let refused_by_queue = feeder.join().expect("feeder");
    let peak_rss = sampler.join().expect("sampler");
    let pushed = pushed.load(Ordering::Relaxed);
    // Every pushed event must be stored.
    let settle = Instant::now() + Duration::from_secs(60);
    let mut now_stored = stored(&probe, &base);
    while now_stored < initial + pushed && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
        now_stored = stored(&probe, &base);
    }
    let lost = (initial + pushed).saturating_sub(now_stored) + cpa.lost_events();
    let hwm = rss_kib(pid, "VmHWM:");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);

    println!(
        "\nload: {} clients for {} s, {} events/s offered, database of {initial} events (load average {})",
        args.clients,
        args.seconds,
        args.rate,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "| {:<28} | {:>8} | {:>6} | {:>6} | {:>9} | {:>9} | {:>14} |",
        "request", "answered", "503", "5xx", "p50 ms", "p99 ms", "target p99"
    );
    println!(
        "|{:-<30}|{:->10}|{:->8}|{:->8}|{:->11}|{:->11}|{:->16}|",
        "", "", "", "", "", "", ""
    );
    let row = |name: &str, tally: &mut Tally, target: &str| {
        let p50 = percentile(&mut tally.latencies, 0.5);
        let p99 = percentile(&mut tally.latencies, 0.99);
        println!(
            "| {name:<28} | {:>8} | {:>6} | {:>6} | {p50:>9.1} | {p99:>9.1} | {target:>14} |",
            tally.ok, tally.refused, tally.failed
        );
    };
    row("dashboard (baseline, alone)", &mut baseline[0], "-");
    row("monitoring (baseline, alone)", &mut baseline[1], "-");
    row("/status (baseline, alone)", &mut baseline[2], "-");
    row("dashboard under load", &mut dashboard, "<= 100");
    row("monitoring under load", &mut monitoring, "<= 100");
    row("/status under load", &mut status, "<= 10");
    println!(
        "\nevents: {pushed} emitted into CPA's queue ({refused_by_queue} not offered: queue full), {} stored, {lost} lost (target 0)",
        now_stored.saturating_sub(initial)
    );
    println!(
        "RSS: {:.1} MiB idle, {:.1} MiB peak sampled, {:.1} MiB high-water mark (target <= 64 MiB)",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "5xx other than deliberate 503: {} (target 0)",
        dashboard.failed + monitoring.failed + status.failed
    );
}
