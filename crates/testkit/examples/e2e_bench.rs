//! End-to-end benchmark: the release server fed by the fake CPA's HTTP usage queue
//! with realistic CPA 7.2 payloads, then every request the panel sends timed over
//! HTTP with the server's resident memory before and after each.
//!
//! `cargo xtask bench e2e [--size N] [--live] [--runs R] [--live-minutes M]
//! [--data DIR] [--keep]` (xtask builds the release binary and passes `--server`).
//!
//! - Default: N events (1,000,000) spread evenly over the 30 days before now.
//! - `--live`: first an empty day, then N events into today, each time a trickle of
//!   10 events/s whose disk writes and CPU per event are measured; then a steady
//!   2,000 events/s for M minutes (6) with CPA's backlog sampled; then the request
//!   table, now that the last 30 minutes hold the most events.
//!
//! - `--data DIR --keep`: the data directory is `DIR` and is kept afterwards, with a
//!   note of what it holds (`e2e-fill.txt`: size and the fill's end instant). A later
//!   run with the same `--data DIR` and `--size` (not `--live`) reuses it instead of
//!   filling again, times the server's start on it (new migrations run there), and
//!   anchors every request at the fill's end instant, so a 1M fill is done once.
//!
//! Requests are timed once the server is idle (under 3 % of a core for three
//! seconds in a row, after the fill's search indexing and checkpoints; the table
//! header says how long that took). Each timed run comes more than a second after
//! the previous identical request, so none is served from the server's
//! short-lived copy of an answer.
//!
//! Figures depend on the machine's load: the table header prints `uptime`'s load
//! average, and each target is printed beside its figure.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark prints its table and stops on a broken setup"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpamp_testkit::{FakeCpa, FakeCpaOptions, Traffic};

#[path = "shared/server.rs"]
mod server;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "e2e-bench-admin-key-0123456789";
const CPA_KEY: &str = "e2e-bench-management-key";
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Longer than the server keeps an identical answer while nothing is stored.
const FRESH_GAP: Duration = Duration::from_millis(1_100);
/// The fake CPA's queue is kept below this, like a CPA whose consumer keeps up.
const QUEUE_CAP: usize = 20_000;

struct Args {
    server: PathBuf,
    size: u64,
    live: bool,
    runs: usize,
    live_minutes: u64,
    live_rate: u64,
    /// The data directory (a fresh temporary one when not given).
    data: Option<PathBuf>,
    /// Keep the data directory afterwards (and reuse a filled one).
    keep: bool,
}

fn args() -> Args {
    let mut out = Args {
        server: PathBuf::from("target/release/cpamp-server"),
        size: 1_000_000,
        live: false,
        runs: 7,
        live_minutes: 6,
        live_rate: 2_000,
        data: None,
        keep: false,
    };
    let mut list = std::env::args().skip(1);
    while let Some(arg) = list.next() {
        let mut value = || list.next().expect("a value after the option");
        match arg.as_str() {
            "--server" => out.server = PathBuf::from(value()),
            "--size" => out.size = value().replace('_', "").parse().expect("--size N"),
            "--runs" => out.runs = value().parse().expect("--runs R"),
            "--live" => out.live = true,
            "--live-minutes" => out.live_minutes = value().parse().expect("--live-minutes M"),
            "--live-rate" => out.live_rate = value().parse().expect("--live-rate R"),
            "--data" => out.data = Some(PathBuf::from(value())),
            "--keep" => out.keep = true,
            other => panic!(
                "unknown option {other:?}; use --server PATH, --size N, --runs R, --live, --live-minutes M, --live-rate R, --data DIR, --keep"
            ),
        }
    }
    out
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The server process and what is read from `/proc` about it.
struct Server {
    child: Child,
    base: String,
    client: reqwest::blocking::Client,
    data: PathBuf,
}

impl Server {
    fn start(binary: &Path, data: &Path, cpa: &str) -> Server {
        let (child, base) = server::spawn(
            binary,
            &[
                ("USAGE_DATA_DIR", data.as_os_str()),
                ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY.as_ref()),
                ("CPA_UPSTREAM_URL", cpa.as_ref()),
                ("CPA_MANAGEMENT_KEY", CPA_KEY.as_ref()),
                ("USAGE_COLLECTOR_MODE", "http".as_ref()),
                ("RUST_LOG", "info".as_ref()),
            ],
        );
        Server {
            child,
            base,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .expect("client"),
            data: data.to_path_buf(),
        }
    }

    fn proc_field(&self, file: &str, name: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }

    fn rss_mib(&self) -> f64 {
        self.proc_field("status", "VmRSS:") as f64 / 1024.0
    }

    fn peak_rss_mib(&self) -> f64 {
        self.proc_field("status", "VmHWM:") as f64 / 1024.0
    }

    fn written_bytes(&self) -> u64 {
        self.proc_field("io", "write_bytes:")
    }

    /// Waits until the server has used under 3 % of a core in each of three
    /// seconds in a row (two minutes at most), and says how long that took.
    fn settle(&self) -> Duration {
        const WINDOW: Duration = Duration::from_secs(1);
        const QUIET_MS: f64 = 30.0;
        let started = Instant::now();
        let mut quiet = 0;
        let mut before = self.cpu_ms();
        while quiet < 3 && started.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(WINDOW);
            let now = self.cpu_ms();
            quiet = if now - before < QUIET_MS {
                quiet + 1
            } else {
                0
            };
            before = now;
        }
        started.elapsed()
    }

    /// User + system CPU time of the whole process, in milliseconds.
    fn cpu_ms(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the name.
        let ticks: u64 = fields
            .get(11..13)
            .map(|pair| pair.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        ticks as f64 * 10.0
    }

    fn database_bytes(&self) -> u64 {
        ["usage.sqlite", "usage.sqlite-wal"]
            .iter()
            .filter_map(|name| std::fs::metadata(self.data.join(name)).ok())
            .map(|meta| meta.len())
            .sum()
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, usize, Vec<u8>) {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "POST" => self.client.post(url).json(body.unwrap_or(&json!({}))),
            _ => self.client.get(url),
        };
        let response = request.bearer_auth(ADMIN_KEY).send().expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().expect("body").to_vec();
        (status, bytes.len(), bytes)
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (_, _, bytes) = self.send(method, path, body);
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// Stored events plus dead letters, as `/status` reports them.
    fn stored(&self) -> u64 {
        let status = self.json("GET", "/status", None);
        status["events"].as_u64().unwrap_or(0) + status["deadLetters"].as_u64().unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Pushes `count` payloads whose instants step evenly through `[from_ms, to_ms)`,
/// keeping the fake queue below [`QUEUE_CAP`], then waits until the server has
/// stored them all. Returns the seconds taken.
fn feed(
    cpa: &FakeCpa,
    server: &Server,
    traffic: &mut Traffic,
    count: u64,
    (from_ms, to_ms): (i64, i64),
    expected_total: u64,
) -> f64 {
    let started = Instant::now();
    let span_ns = i128::from(to_ms - from_ms) * 1_000_000;
    let mut last_report = Instant::now();
    for index in 0..count {
        let offset = span_ns * i128::from(index) / i128::from(count.max(1));
        // A sub-millisecond remainder so timestamps carry nanoseconds.
        let nanos = i128::from(from_ms) * 1_000_000 + offset + i128::from(index % 997) * 1_003;
        while cpa.queued_len() >= QUEUE_CAP {
            std::thread::sleep(Duration::from_millis(5));
        }
        cpa.push_raw(traffic.payload(nanos));
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "  fed {index}/{count} in {:.0}s (load {})",
                started.elapsed().as_secs_f64(),
                load_average()
            );
        }
    }
    wait_stored(server, expected_total);
    started.elapsed().as_secs_f64()
}

fn wait_stored(server: &Server, expected_total: u64) {
    let started = Instant::now();
    loop {
        let stored = server.stored();
        if stored >= expected_total {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3 * 3600),
            "only {stored} of {expected_total} stored"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A request of the panel, with its target.
struct Probe {
    name: String,
    method: &'static str,
    path: String,
    body: Option<Value>,
    target_ms: f64,
}

fn probe(
    name: &str,
    target_ms: f64,
    method: &'static str,
    path: String,
    body: Option<Value>,
) -> Probe {
    Probe {
        name: name.to_string(),
        method,
        path,
        body,
        target_ms,
    }
}

fn analytics(name: &str, target_ms: f64, body: Value) -> Probe {
    probe(
        name,
        target_ms,
        "POST",
        "/v0/management/monitoring/analytics".to_string(),
        Some(body),
    )
}

/// Local midnight of `ms` in a fixed-offset zone (the bench uses UTC and +08:00).
fn midnight(ms: i64, offset_ms: i64) -> i64 {
    (ms + offset_ms).div_euclid(DAY_MS) * DAY_MS - offset_ms
}

/// Every request the panel sends on its pages, as the original panel builds them.
fn probes(server: &Server, now: i64, large: bool) -> Vec<Probe> {
    let (dashboard_ms, overview_ms) = if large { (10.0, 100.0) } else { (50.0, 50.0) };
    let shanghai = 8 * HOUR_MS;
    let today = midnight(now, 0);
    let tz = "Asia/Shanghai";
    let compact = |extra: Value| {
        let mut include = json!({"summary": true, "summary_profile": "compact"});
        for (key, value) in extra.as_object().unwrap() {
            include[key] = value.clone();
        }
        include
    };
    let mut list = vec![
        probe(
            "dashboard summary",
            dashboard_ms,
            "GET",
            format!(
                "/v0/management/dashboard/summary?today_start_ms={today}&now_ms={now}&top_models=5&recent_failures=5"
            ),
            None,
        ),
        probe("status", 50.0, "GET", "/status".to_string(), None),
    ];
    // Request monitor: today (default), 30 days, all; accounts, API keys, realtime.
    let month = midnight(now, 0) - 29 * DAY_MS;
    for (label, from, granularity) in [
        ("today", today, "hour"),
        ("30d", month, "day"),
        ("all", 1, "day"),
    ] {
        let target = if label == "30d" { 20.0 } else { 50.0 };
        list.push(analytics(
            &format!("monitor {label}: accounts + page 500"),
            target,
            json!({"from_ms": from, "to_ms": now, "now_ms": now, "time_zone": "UTC",
                   "include": compact(json!({"granularity": granularity, "account_stats": true, "events_page": {"limit": 500, "before_ms": null, "before_id": null}}))}),
        ));
    }
    list.push(analytics(
        "monitor today: summary only",
        50.0,
        json!({"from_ms": today, "to_ms": now, "now_ms": now, "time_zone": "UTC",
               "include": compact(json!({"granularity": "hour"}))}),
    ));
    list.push(analytics(
        "monitor 30d: API keys + page 500",
        50.0,
        json!({"from_ms": month, "to_ms": now, "now_ms": now, "time_zone": "UTC",
               "include": compact(json!({"granularity": "day", "api_key_stats": true, "events_page": {"limit": 500}}))}),
    ));
    list.push(analytics(
        "monitor 30d: full summary + task buckets",
        50.0,
        json!({"from_ms": month, "to_ms": now, "now_ms": now, "time_zone": "UTC",
               "include": {"summary": true, "granularity": "day", "task_buckets": true}}),
    ));
    list.push(analytics(
        "monitor last 30 min: summary",
        50.0,
        json!({"from_ms": now - 30 * MINUTE_MS, "to_ms": now, "now_ms": now, "time_zone": "UTC",
               "include": compact(json!({"granularity": "hour", "summary_percentiles": true}))}),
    ));
    list.push(analytics(
        "monitor 30d: selectors",
        if large { 5.0 } else { 50.0 },
        json!({"from_ms": month, "to_ms": now, "now_ms": now, "time_zone": "UTC",
               "include": {"filter_options": true, "filter_selectors": true}}),
    ));
    // Realtime "load more": the page after the first 500.
    let first = server.json(
        "POST",
        "/v0/management/monitoring/analytics",
        Some(&json!({"from_ms": month, "to_ms": now, "include": {"events_page": {"limit": 500}}})),
    );
    let (before_ms, before_id) = (
        first["events"]["next_before_ms"].as_i64().unwrap_or(0),
        first["events"]["next_before_id"].as_i64().unwrap_or(0),
    );
    list.push(analytics(
        "monitor 30d: realtime next page",
        50.0,
        json!({"from_ms": month, "to_ms": now, "now_ms": now, "time_zone": "UTC",
               "include": compact(json!({"granularity": "day", "events_page": {"limit": 500, "before_ms": before_ms, "before_id": before_id}}))}),
    ));
    list.push(analytics(
        "search \"claude\" 24h, page 500",
        30.0,
        json!({"from_ms": now - DAY_MS, "to_ms": now, "now_ms": now, "time_zone": "UTC", "search_query": "claude",
               "include": compact(json!({"granularity": "hour", "account_stats": true, "events_page": {"limit": 500}}))}),
    ));
    list.push(probe(
        "header snapshots 30d, 1000",
        50.0,
        "GET",
        "/v0/management/monitoring/header-snapshots?days=30&limit=1000".to_string(),
        None,
    ));
    // Usage analytics, browser in Asia/Shanghai.
    let overview = json!({"summary_percentiles": true, "summary_comparison": true, "timeline": true,
        "model_stats": true, "channel_share": true, "api_key_stats": true, "anomaly_points": true});
    for (label, from, granularity, target) in [
        ("24h", now - DAY_MS, "hour", 50.0),
        ("30d", now - 30 * DAY_MS, "day", overview_ms),
    ] {
        let mut include = compact(overview.clone());
        include["granularity"] = json!(granularity);
        list.push(analytics(
            &format!("analytics overview {label}, {tz}"),
            target,
            json!({"from_ms": from, "to_ms": now, "now_ms": now, "time_zone": tz, "include": include}),
        ));
    }
    let month_from = now - 30 * DAY_MS;
    let main = server.json(
        "POST",
        "/v0/management/monitoring/analytics",
        Some(
            &json!({"from_ms": month_from, "to_ms": now, "now_ms": now, "time_zone": tz,
                     "include": {"api_key_stats": true, "credential_stats": true}}),
        ),
    );
    let top_keys: Vec<Value> = main["api_key_stats"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .take(4)
                .map(|row| row["api_key_hash"].clone())
                .collect()
        })
        .unwrap_or_default();
    let credential = main["credential_stats"][0]["id"].clone();
    let tab = |name: &str, extra: Value| {
        let mut include = compact(extra);
        include["granularity"] = json!("day");
        analytics(
            name,
            50.0,
            json!({"from_ms": month_from, "to_ms": now, "now_ms": now, "time_zone": tz, "include": include}),
        )
    };
    list.push(tab(
        "analytics 30d: top-4 key timeline",
        json!({"api_key_timeline": true}),
    ));
    if let Some(last) = list.last_mut() {
        last.body.as_mut().unwrap()["filters"] = json!({"api_key_hashes": top_keys});
    }
    list.push(tab(
        "analytics 30d: drill-down preview",
        json!({"timeline": true, "drilldown_preview": {"from_ms": midnight(now, shanghai) - DAY_MS, "to_ms": midnight(now, shanghai), "limit": 12}}),
    ));
    list.push(tab(
        "analytics 30d: trends",
        json!({"summary_comparison": true, "timeline": true, "model_stats": true, "api_key_stats": true, "anomaly_points": true}),
    ));
    list.push(tab(
        "analytics 30d: models",
        json!({"timeline": true, "model_stats": true, "api_key_stats": true}),
    ));
    list.push(tab(
        "analytics 30d: API keys",
        json!({"api_key_stats": true}),
    ));
    list.push(tab(
        "analytics 30d: credentials",
        json!({"credential_stats": true}),
    ));
    list.push(tab(
        "analytics 30d: one credential timeline",
        json!({"credential_timeline": true}),
    ));
    if let Some(last) = list.last_mut() {
        last.body.as_mut().unwrap()["filters"] = json!({"credential_ids": [credential]});
    }
    list.push(analytics(
        "analytics 30d: heatmap",
        30.0,
        json!({"from_ms": month_from, "to_ms": now, "now_ms": now, "time_zone": tz,
               "include": compact(json!({"granularity": "day", "heatmap": true}))}),
    ));
    let day = midnight(now, shanghai) - DAY_MS;
    list.push(analytics(
        "analytics: heatmap of one day",
        50.0,
        json!({"from_ms": day, "to_ms": day + DAY_MS, "now_ms": now, "time_zone": tz,
               "include": {"granularity": "hour", "heatmap": true}}),
    ));
    list.push(analytics(
        "analytics 30d: selectors",
        if large { 5.0 } else { 50.0 },
        json!({"from_ms": month_from, "to_ms": now, "now_ms": now, "time_zone": tz,
               "include": {"filter_options": true, "filter_selectors": true}}),
    ));
    // Account views of the monitor and the accounts page.
    let accounts: Vec<Value> = [
        ("79b22708a9bdbdca", "codex"),
        ("2826f9ce6e0a27eb", "claude"),
        ("2b3c4d5e6f708192", "gemini"),
        ("d4e5f60718293a4b", "xai"),
    ]
    .iter()
    .enumerate()
    .map(|(row, (index, provider))| json!({"row_key": format!("r{row}"), "auth_index": index, "auth_provider_snapshot": provider}))
    .collect();
    list.push(probe(
        "account history, 4 accounts",
        50.0,
        "POST",
        "/v0/management/monitoring/account-history".to_string(),
        Some(json!({"accounts": accounts})),
    ));
    let windows: Vec<Value> = accounts
        .iter()
        .map(|account| {
            let mut window = account.clone();
            window["provider_window_id"] = json!("primary");
            window["from_ms"] = json!(now - 5 * HOUR_MS);
            window["to_ms"] = json!(now);
            window
        })
        .collect();
    list.push(probe(
        "account window usage, 4 windows",
        50.0,
        "POST",
        "/v0/management/monitoring/account-window-usage".to_string(),
        Some(json!({"windows": windows})),
    ));
    list.push(probe(
        "model prices usage summary",
        50.0,
        "GET",
        "/v0/management/model-prices/usage-summary".to_string(),
        None,
    ));
    list.push(probe(
        "GET /usage (50,000 newest)",
        f64::NAN,
        "GET",
        "/v0/management/usage".to_string(),
        None,
    ));
    list
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Times every probe `runs` times after one warm-up and prints one row each.
fn table(server: &Server, probes: &[Probe], runs: usize) -> Vec<(String, f64, f64)> {
    println!(
        "{:<44} {:>6} {:>9} {:>9} {:>8} {:>9} {:>9} {:>10}",
        "request (what the panel sends)",
        "status",
        "median",
        "max",
        "target",
        "RSS pre",
        "RSS post",
        "answer"
    );
    let mut misses = Vec::new();
    for probe in probes {
        let rss_before = server.rss_mib();
        let (status, bytes, _) = server.send(probe.method, &probe.path, probe.body.as_ref());
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            // The server keeps an answer for a moment while no event is stored;
            // waiting that out makes every timed run a computation, as a panel
            // refreshing every few seconds sees.
            std::thread::sleep(FRESH_GAP);
            let started = Instant::now();
            let _ = server.send(probe.method, &probe.path, probe.body.as_ref());
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let max = times.iter().copied().fold(0.0, f64::max);
        let median = median(&mut times);
        let rss_after = server.rss_mib();
        let target = if probe.target_ms.is_nan() {
            "-".to_string()
        } else {
            format!("{:.0} ms", probe.target_ms)
        };
        let verdict = if probe.target_ms.is_nan() || median <= probe.target_ms {
            ""
        } else {
            misses.push((probe.name.clone(), median, probe.target_ms));
            "  MISS"
        };
        println!(
            "{:<44} {:>6} {:>7.1}ms {:>7.1}ms {:>8} {:>7.1}MB {:>7.1}MB {:>8.1}KB{verdict}",
            probe.name,
            status,
            median,
            max,
            target,
            rss_before,
            rss_after,
            bytes as f64 / 1024.0
        );
    }
    misses
}

struct Trickle {
    bytes_per_event: f64,
    cpu_ms_per_event: f64,
}

/// `rate` events/s stamped "now" for `seconds`, with the server's disk writes and
/// CPU per stored event.
fn trickle(
    cpa: &FakeCpa,
    server: &Server,
    traffic: &mut Traffic,
    rate: u64,
    seconds: u64,
    expected_before: u64,
) -> Trickle {
    let (bytes_before, cpu_before) = (server.written_bytes(), server.cpu_ms());
    let count = rate * seconds;
    let started = Instant::now();
    for index in 0..count {
        let due = Duration::from_secs_f64(index as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        cpa.push_raw(traffic.payload(jiff::Timestamp::now().as_nanosecond()));
    }
    wait_stored(server, expected_before + count);
    // Let the last batch's commit and any checkpoint finish before reading.
    std::thread::sleep(Duration::from_secs(2));
    Trickle {
        bytes_per_event: (server.written_bytes() - bytes_before) as f64 / count as f64,
        cpu_ms_per_event: (server.cpu_ms() - cpu_before) / count as f64,
    }
}

fn main() {
    let args = args();
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime"),
    );
    let mut options = FakeCpaOptions::new(CPA_KEY);
    options.retention = Duration::from_secs(3600);
    let cpa = runtime.block_on(FakeCpa::start(options)).expect("fake CPA");
    let data = args.data.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cpamp-bench-e2e-{}", std::process::id()))
    });
    // A directory filled by an earlier `--keep` run with the same size is reused.
    let reused = if args.live {
        None
    } else {
        filled(&data, args.size)
    };
    if reused.is_none() {
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("data dir");
    }
    let started = Instant::now();
    let server = Server::start(&args.server, &data, &cpa.base_url());
    let start_seconds = started.elapsed().as_secs_f64();
    let mut traffic = Traffic::new(0x5eed);
    let idle_rss = server.rss_mib();
    println!(
        "e2e benchmark: release server, fake CPA HTTP queue, {} realistic events{}; load average {}",
        args.size,
        if args.live {
            " into today (live)"
        } else {
            " over 30 days"
        },
        load_average()
    );
    let mut stored = 0;
    let mut anchor = None;
    if let Some(fill_end) = reused {
        stored = wait_reused(&server, args.size);
        anchor = Some(fill_end);
        println!(
            "reused {} ({stored} events, filled up to {}); server up in {start_seconds:.1}s",
            data.display(),
            jiff::Timestamp::from_millisecond(fill_end)
                .map_or_else(|_| fill_end.to_string(), |t| t.to_string())
        );
    } else if args.live {
        // An empty day first, then a day holding `size` events.
        let empty = trickle(&cpa, &server, &mut traffic, 10, 60, stored);
        stored += 600;
        let now = now_ms();
        let seconds = feed(
            &cpa,
            &server,
            &mut traffic,
            args.size,
            (midnight(now, 0), now),
            stored + args.size,
        );
        stored += args.size;
        println!(
            "filled today with {} events in {seconds:.0}s ({:.0} events/s), load {}",
            args.size,
            args.size as f64 / seconds,
            load_average()
        );
        let full = trickle(&cpa, &server, &mut traffic, 10, 60, stored);
        stored += 600;
        println!(
            "{:<44} {:>14} {:>14}",
            "ingest at 10 events/s", "written/event", "CPU/event"
        );
        for (label, row) in [
            ("empty day", &empty),
            (&*format!("day holding {} events", args.size), &full),
        ] {
            println!(
                "{:<44} {:>12.0} B {:>11.2} ms",
                label, row.bytes_per_event, row.cpu_ms_per_event
            );
        }
        println!(
            "{:<44} {:>13.1}x {:>13.1}x   (target within 2x)",
            "full day / empty day",
            full.bytes_per_event / empty.bytes_per_event.max(1.0),
            full.cpu_ms_per_event / empty.cpu_ms_per_event.max(0.001)
        );
        // Steady rate: CPA's backlog, sampled every second.
        let count = args.live_rate * args.live_minutes * 60;
        let started = Instant::now();
        let mut worst_backlog = 0.0f64;
        let mut last_sample = Instant::now();
        for index in 0..count {
            let due = Duration::from_secs_f64(index as f64 / args.live_rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            cpa.push_raw(traffic.payload(jiff::Timestamp::now().as_nanosecond()));
            if last_sample.elapsed() >= Duration::from_secs(1) {
                last_sample = Instant::now();
                worst_backlog = worst_backlog.max(cpa.queued_len() as f64 / args.live_rate as f64);
            }
        }
        let end_backlog = cpa.queued_len() as f64 / args.live_rate as f64;
        wait_stored(&server, stored + count);
        stored += count;
        println!(
            "steady {} events/s for {} min: worst CPA backlog {worst_backlog:.1}s, at the end {end_backlog:.1}s (target < 5 s), load {}",
            args.live_rate,
            args.live_minutes,
            load_average()
        );
    } else {
        let now = now_ms();
        let seconds = feed(
            &cpa,
            &server,
            &mut traffic,
            args.size,
            (now - 30 * DAY_MS, now),
            args.size,
        );
        stored += args.size;
        println!(
            "ingested {} events in {seconds:.0}s ({:.0} events/s), load {}",
            args.size,
            args.size as f64 / seconds,
            load_average()
        );
        if args.keep {
            std::fs::write(
                data.join(FILL_NOTE),
                format!("{} {}\n", args.size, now_ms()),
            )
            .expect("write the fill note");
        }
    }
    // The fill leaves work behind (the search index of the hours it filled, WAL
    // checkpoints): requests are timed once the server has done it, as a panel
    // opened later would find it.
    let settled = server.settle();
    let database = server.database_bytes();
    println!(
        "database {:.1} MB = {:.0} B/event (target <= 400); RSS idle at start {idle_rss:.1} MB, after ingest {:.1} MB; server idle after {:.0} s",
        database as f64 / 1e6,
        database as f64 / stored as f64,
        server.rss_mib(),
        settled.as_secs_f64()
    );
    let now = anchor.unwrap_or_else(now_ms);
    let list = probes(&server, now, args.size >= 5_000_000);
    println!(
        "requests: median and max of {} runs after one warm-up; load {}",
        args.runs,
        load_average()
    );
    let misses = table(&server, &list, args.runs);
    // Panels that each ask for a page of their own: every answer differs, so none is
    // shared, and the copies kept of them must not add up.
    let pages = 200;
    for page in 0..pages {
        let to = now - page * MINUTE_MS;
        server.send(
            "POST",
            "/v0/management/monitoring/analytics",
            Some(
                &json!({"from_ms": to - DAY_MS, "to_ms": to, "time_zone": "UTC",
                         "include": {"events_page": {"limit": 500}}}),
            ),
        );
    }
    println!(
        "after {pages} distinct pages of 500 events: server RSS {:.1} MB",
        server.rss_mib()
    );
    println!(
        "server RSS now {:.1} MB, peak {:.1} MB (target: peak <= 64 MB at 10M, RSS <= 64 MB after any sequence); load {}",
        server.rss_mib(),
        server.peak_rss_mib(),
        load_average()
    );
    if misses.is_empty() {
        println!("every request met its target");
    } else {
        println!("{} request(s) missed their target", misses.len());
    }
    server.stop();
    cpa.stop();
    if args.keep {
        println!("data kept in {}", data.display());
    } else {
        let _ = std::fs::remove_dir_all(&data);
    }
}

/// What a kept data directory holds: `<size> <fill end, Unix ms>`.
const FILL_NOTE: &str = "e2e-fill.txt";

/// The fill's end instant when `data` was filled with `size` events by a `--keep` run.
fn filled(data: &Path, size: u64) -> Option<i64> {
    let note = std::fs::read_to_string(data.join(FILL_NOTE)).ok()?;
    let mut fields = note.split_whitespace();
    let noted: u64 = fields.next()?.parse().ok()?;
    let end: i64 = fields.next()?.parse().ok()?;
    (noted == size && data.join("usage.sqlite").exists()).then_some(end)
}

/// Waits until a reused server reports the filled events (it may be converting the
/// database in place first) and returns the count.
fn wait_reused(server: &Server, size: u64) -> u64 {
    wait_stored(server, size);
    server.stored()
}
