//! Kill benchmark: the release server killed with `SIGKILL` at random moments while the
//! fake CPA emits events, per transport, with a ledger of what CPA handed out compared
//! with what the database holds at the end.
//!
//! `cargo xtask bench kills` builds the binaries and runs
//! ```text
//! kill_bench --server target/release/cpamp-server [--events 50000] [--rate 500] [--kills 10]
//!            [--transports http,resp,subscribe] [--seed N] [--batch 100] [--poll-ms 500]
//! ```
//! For each transport: an empty data directory, the fake CPA (CPA's queue, retention and
//! subscriber semantics), the server collecting from it with the given batch size and
//! poll interval (CPA's and the server's defaults: 100 and 500 ms), and a feeder that
//! emits `--rate` events/s (realistic payloads from `EventGenerator`) until `--events`
//! were emitted. `--kills` moments are drawn uniformly over the emission time (seeded);
//! at each the server gets `SIGKILL` and is started again at once. Afterwards the server
//! drains CPA, is stopped with `SIGTERM` and started once more so that everything left in
//! the inbox is stored; then the whole history is exported over HTTP and counted per
//! request id against the ledger.
//!
//! Reported per transport: events emitted, kills, events lost and duplicated, the lost
//! events that never left CPA (messages still in the buffer of a subscription whose
//! connection died with the server, or dropped by CPA itself), the interrupted-read gaps
//! recorded, the restarts that recovered items from a response cut short by a kill, and
//! the time.
//! The same-run baseline is the same transport with no kill (`--baseline`, on by
//! default; `--no-baseline` skips it): it shows the ledger comparison itself finds
//! nothing to report when nothing is killed. Exits non-zero on a duplicated event or an
//! event lost after it left CPA.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark prints its table and stops on a broken setup"
)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpamp_testkit::{FakeCpa, FakeCpaOptions};
use serde_json::Value;

const ADMIN_KEY: &str = "kill-bench-admin-key-0123456789";
const CPA_KEY: &str = "kill-bench-management-key";

struct Args {
    server: PathBuf,
    events: usize,
    rate: usize,
    kills: usize,
    transports: Vec<String>,
    seed: u64,
    batch: u32,
    poll_ms: u64,
    baseline: bool,
}

fn args() -> Args {
    let mut out = Args {
        server: PathBuf::from("target/release/cpamp-server"),
        events: 50_000,
        rate: 500,
        kills: 10,
        transports: vec!["http".into(), "resp".into(), "subscribe".into()],
        seed: 0x5eed_c0ff_ee15_d00d,
        batch: 100,
        poll_ms: 500,
        baseline: true,
    };
    let mut list = std::env::args().skip(1);
    while let Some(arg) = list.next() {
        let mut value = || list.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--server" => out.server = PathBuf::from(value()),
            "--events" => out.events = value().replace('_', "").parse().expect("--events N"),
            "--rate" => out.rate = value().parse().expect("--rate N"),
            "--kills" => out.kills = value().parse().expect("--kills N"),
            "--transports" => {
                out.transports = value().split(',').map(str::to_string).collect();
            }
            "--seed" => out.seed = value().parse().expect("--seed N"),
            "--batch" => out.batch = value().parse().expect("--batch N"),
            "--poll-ms" => out.poll_ms = value().parse().expect("--poll-ms N"),
            "--no-baseline" => out.baseline = false,
            "--baseline" => out.baseline = true,
            other => panic!("unknown option {other}"),
        }
    }
    out
}

/// xorshift64*: the kill moments, the same for every run with the same seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The server process, restarted on the same data directory.
struct Server<'a> {
    binary: &'a Path,
    data: &'a Path,
    env: Vec<(String, String)>,
    child: Child,
    base: String,
    /// Warnings and errors it logged, across restarts.
    log: Arc<Mutex<Vec<String>>>,
}

impl<'a> Server<'a> {
    fn start(binary: &'a Path, data: &'a Path, env: Vec<(String, String)>) -> Server<'a> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, base) = spawn(binary, data, &env, &log);
        Server {
            binary,
            data,
            env,
            child,
            base,
            log,
        }
    }

    /// Kills the server and starts it again; returns the bytes its sockets to `port` had
    /// received but it had not read yet at the moment of the kill (the kernel drops them
    /// with the process).
    fn kill_and_restart_unread(&mut self, port: u16) -> u64 {
        let unread = unread_bytes(port);
        self.kill_and_restart();
        unread
    }

    fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, base) = spawn(self.binary, self.data, &self.env, &self.log);
        self.child = child;
        self.base = base;
    }

    fn terminate(&mut self) {
        // SIGTERM: the server commits what it holds and exits.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        let (child, base) = spawn(self.binary, self.data, &self.env, &self.log);
        self.child = child;
        self.base = base;
    }

    fn logged(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }
}

/// Starts the server on port 0 and returns it with its base URL once it listens; its
/// warnings and errors are kept in `log` (its stderr is drained on a thread).
fn spawn(
    binary: &Path,
    data: &Path,
    env: &[(String, String)],
    log: &Arc<Mutex<Vec<String>>>,
) -> (Child, String) {
    let mut command = std::process::Command::new(binary);
    command
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("USAGE_DATA_DIR", data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
    let stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = sender.send(rest.split_whitespace().next().unwrap_or("").to_string());
            } else if line.contains("WARN") || line.contains("ERROR") {
                log.lock().unwrap().push(line);
            }
        }
    });
    let addr = receiver
        .recv_timeout(Duration::from_secs(600))
        .expect("the server reports its address");
    (child, format!("http://{addr}"))
}

/// Bytes received by loopback sockets connected to `port` and not yet read by their
/// process (`rx_queue` in `/proc/net/tcp`).
fn unread_bytes(port: u16) -> u64 {
    let mut total = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(queues)) = (fields.get(2), fields.get(4)) else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            let rx = queues
                .split(':')
                .nth(1)
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            if remote_port == Some(port) {
                total += rx.unwrap_or(0);
            }
        }
    }
    total
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

fn status(client: &reqwest::blocking::Client, base: &str) -> Option<Value> {
    client
        .get(format!("{base}/status"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .ok()?
        .json::<Value>()
        .ok()
}

/// Stored events per request id, from the server's export of its whole history.
fn stored_counts(client: &reqwest::blocking::Client, base: &str) -> BTreeMap<String, i64> {
    let body = client
        .get(format!("{base}/v0/management/usage/export"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("export")
        .error_for_status()
        .expect("export answered")
        .text()
        .expect("export body");
    let mut counts = BTreeMap::new();
    for line in body.lines().filter(|line| !line.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).expect("an export line is JSON");
        let id = record["request_id"].as_str().unwrap_or("").to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// `(cause, detail)` of every recorded collection gap.
fn gaps(client: &reqwest::blocking::Client, base: &str) -> Vec<(String, String)> {
    let body: Value = client
        .get(format!("{base}/v0/management/collector-gaps"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("gaps")
        .json()
        .expect("gaps JSON");
    body["gaps"]
        .as_array()
        .map(|gaps| {
            gaps.iter()
                .map(|gap| {
                    (
                        gap["cause"].as_str().unwrap_or("").to_string(),
                        gap["detail"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Default)]
struct Outcome {
    emitted: usize,
    kills: usize,
    stored: i64,
    lost: usize,
    duplicated: usize,
    cpa_dropped: u64,
    cpa_undelivered: u64,
    /// Bytes the kernel had received for the server and it had not read, at the kills.
    unread_at_kills: u64,
    /// Average bytes of one emitted payload.
    payload_bytes: u64,
    interrupted_gaps: usize,
    recovered_restarts: usize,
    seconds: f64,
}

fn run(
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    transport: &str,
    kills: usize,
    seed: u64,
) -> Outcome {
    let started = Instant::now();
    let data = tempfile::tempdir().expect("tempdir");
    let cpa = runtime
        .block_on(FakeCpa::start(FakeCpaOptions::new(CPA_KEY)))
        .expect("fake CPA");
    let env = vec![
        ("CPA_MANAGER_ADMIN_KEY".to_string(), ADMIN_KEY.to_string()),
        ("CPA_UPSTREAM_URL".to_string(), cpa.base_url()),
        ("CPA_MANAGEMENT_KEY".to_string(), CPA_KEY.to_string()),
        ("USAGE_COLLECTOR_MODE".to_string(), transport.to_string()),
        ("USAGE_BATCH_SIZE".to_string(), args.batch.to_string()),
        (
            "USAGE_POLL_INTERVAL_MS".to_string(),
            args.poll_ms.to_string(),
        ),
        ("RUST_LOG".to_string(), "warn,cpamp_server=info".to_string()),
    ];
    let mut server = Server::start(&args.server, data.path(), env);
    let probe = client();
    if transport == "subscribe" {
        let deadline = Instant::now() + Duration::from_secs(30);
        while cpa.subscriber_count() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Kill moments, uniformly over the emission time.
    let emission = Duration::from_secs_f64(args.events as f64 / args.rate as f64);
    let mut random = Random(seed | 1);
    let mut moments: Vec<Duration> = (0..kills)
        .map(|_| emission.mul_f64(random.unit()))
        .collect();
    moments.sort();
    let mut moments = moments.into_iter().peekable();

    let mut ledger = Vec::with_capacity(args.events);
    let mut killed = 0;
    let mut unread = 0u64;
    let begin = Instant::now();
    while ledger.len() < args.events {
        let due = ((begin.elapsed().as_secs_f64() * args.rate as f64) as usize).min(args.events);
        if due > ledger.len() {
            let count = due - ledger.len();
            ledger.extend(runtime.block_on(cpa.emit(count)));
        }
        if moments
            .peek()
            .is_some_and(|moment| begin.elapsed() >= *moment)
        {
            moments.next();
            unread += server.kill_and_restart_unread(cpa.addr().port());
            killed += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // What CPA still holds is taken; then a clean stop and start stores whatever the
    // inbox kept.
    let deadline = Instant::now() + Duration::from_secs(120);
    while cpa.queued_len() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut last = -1;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = status(&probe, &server.base)
            .and_then(|status| status["eventCount"].as_i64())
            .unwrap_or(-1);
        if now == last && now >= 0 {
            break;
        }
        last = now;
    }
    server.terminate();
    server.restart();
    std::thread::sleep(Duration::from_millis(500));

    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for event in &ledger {
        *expected.entry(event.request_id.clone()).or_insert(0) += 1;
    }
    let stored = stored_counts(&probe, &server.base);
    let lost = expected
        .iter()
        .map(|(id, count)| (count - stored.get(id).copied().unwrap_or(0)).max(0) as usize)
        .sum();
    let duplicated = stored
        .iter()
        .map(|(id, count)| (count - expected.get(id).copied().unwrap_or(0)).max(0) as usize)
        .sum();
    let interrupted_gaps = gaps(&probe, &server.base)
        .iter()
        .filter(|(cause, detail)| {
            cause == "server_down" && detail.contains("stopped abruptly while reading from CPA")
        })
        .count();
    let outcome = Outcome {
        emitted: ledger.len(),
        kills: killed,
        stored: stored.values().sum(),
        lost,
        duplicated,
        cpa_dropped: cpa.lost_events(),
        cpa_undelivered: cpa.undelivered_events(),
        unread_at_kills: unread,
        payload_bytes: ledger
            .iter()
            .map(|event| event.payload.len() as u64)
            .sum::<u64>()
            / ledger.len().max(1) as u64,
        interrupted_gaps,
        recovered_restarts: server.logged("kept the events of a response from CPA"),
        seconds: started.elapsed().as_secs_f64(),
    };
    server.terminate();
    outcome
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            let fields: Vec<&str> = text.split_whitespace().take(3).collect();
            (fields.len() == 3).then(|| fields.join(" "))
        })
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "kill -9 benchmark: {} events per transport at {} events/s, {} kills at random moments (seed {}), batch {}, poll {} ms; load average at start {}",
        args.events,
        args.rate,
        args.kills,
        args.seed,
        args.batch,
        args.poll_ms,
        load_average()
    );
    let mut rows = Vec::new();
    for (index, transport) in args.transports.iter().enumerate() {
        let seed = args.seed.wrapping_add(index as u64 * 0x9e37_79b9);
        if args.baseline {
            rows.push((transport.clone(), run(&args, &runtime, transport, 0, seed)));
        }
        rows.push((
            transport.clone(),
            run(&args, &runtime, transport, args.kills, seed),
        ));
        let (_, last) = rows.last().unwrap();
        println!("{transport}: {last:?}");
    }
    println!();
    println!(
        "| {:<9} | {:>5} | {:>8} | {:>8} | {:>4} | {:>10} | {:>13} | {:>15} | {:>8} | {:>15} | {:>6} |",
        "transport",
        "kills",
        "emitted",
        "stored",
        "lost",
        "duplicated",
        "left in CPA †",
        "unread bytes §",
        "gaps ‡",
        "recovered reads",
        "time s"
    );
    println!(
        "|{:-<11}|{:->7}|{:->10}|{:->10}|{:->6}|{:->12}|{:->15}|{:->17}|{:->10}|{:->17}|{:->8}|",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    let mut failed = false;
    for (transport, outcome) in &rows {
        let in_cpa = outcome.cpa_dropped + outcome.cpa_undelivered;
        failed |= outcome.lost as u64 > in_cpa || outcome.duplicated > 0;
        println!(
            "| {:<9} | {:>5} | {:>8} | {:>8} | {:>4} | {:>10} | {:>13} | {:>15} | {:>8} | {:>15} | {:>6.1} |",
            transport,
            outcome.kills,
            outcome.emitted,
            outcome.stored,
            outcome.lost,
            outcome.duplicated,
            in_cpa,
            format!(
                "{} (~{} ev)",
                outcome.unread_at_kills,
                outcome.unread_at_kills / outcome.payload_bytes.max(1)
            ),
            outcome.interrupted_gaps,
            outcome.recovered_restarts,
            outcome.seconds
        );
    }
    println!(
        "\n† events CPA never wrote to the server: still in a dying subscription's buffer, or dropped by CPA itself; \
         they are part of `lost`.\n§ bytes the kernel had received for the server's connections to CPA and the server had \
         not read yet at the kills (dropped with the process), and the events they hold at the average payload size.\n‡ `server_down` gaps for a kill inside a read from CPA (one open gap covers \
         kills until it closes).\nTargets: 0 duplicated, and nothing lost beyond †. Load average at end {}",
        load_average()
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
