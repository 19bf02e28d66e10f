//! Test harness: run the real binary on port 0 with a temp data directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod live;

/// A running `cpamp-server` process.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Every log line the process wrote so far (stderr).
    pub log: Arc<Mutex<Vec<String>>>,
    /// The thread copying stderr into `log`; it ends at the pipe's end of file.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Extra environment for a server run.
pub type Env<'a> = &'a [(&'a str, &'a str)];

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_cpamp-server")
}

/// A command for the binary with a clean, predictable environment.
pub fn command(data_dir: &Path, env: Env<'_>) -> Command {
    let mut command = Command::new(binary());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("USAGE_DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

impl ServerProcess {
    /// Starts the binary and waits until it logs its listening address.
    pub fn start(data_dir: &Path, env: Env<'_>) -> ServerProcess {
        ServerProcess::start_with_args(data_dir, &[], env)
    }

    /// Starts the binary with command-line arguments (a subcommand such as `demo`).
    pub fn start_with_args(data_dir: &Path, args: &[&str], env: Env<'_>) -> ServerProcess {
        let mut child = command(data_dir, env)
            .args(args)
            .spawn()
            .expect("spawn cpamp-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(addr) = line.split("listening on ").nth(1) {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = sender.send(addr);
                    sent = true;
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let addr = match receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; log:\n{}",
                    log.lock().expect("log").join("\n")
                );
            }
        };
        ServerProcess {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
            log,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Sends SIGTERM and waits for the exit status.
    /// The log is complete when this returns: the last lines the process wrote before
    /// exiting are read up to the pipe's end (bounded, in case a child process of the
    /// server still holds the pipe).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        send_sigterm(self.child.id());
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(20));
        if let Some(reader) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        status
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn send_sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking HTTP client for tests.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A fake CPA running on its own runtime for the length of a test.
pub struct Cpa {
    pub fake: cpamp_testkit::FakeCpa,
    pub runtime: tokio::runtime::Runtime,
}

impl Cpa {
    pub fn start(options: cpamp_testkit::FakeCpaOptions) -> Cpa {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let fake = runtime
            .block_on(cpamp_testkit::FakeCpa::start(options))
            .expect("fake CPA");
        Cpa { fake, runtime }
    }

    pub fn emit(&self, count: usize) {
        self.runtime.block_on(self.fake.emit(count));
    }
}

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// Polls `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The admin key a test seeds through `CPA_MANAGER_ADMIN_KEY`.
pub const ADMIN_KEY: &str = "cmp_admin_TestKey0123456789abcdefABCDEF01";

/// JSON body and status of a request.
pub fn json_of(response: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value)
}

/// True when `needle` occurs in the database files or in `log`.
pub fn leaks(data_dir: &Path, log: &str, needle: &str) -> bool {
    let mut found = log.contains(needle);
    for name in ["usage.sqlite", "usage.sqlite-wal"] {
        let bytes = std::fs::read(data_dir.join(name)).unwrap_or_default();
        found |= bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes());
    }
    found
}

/// Runs `read` on a separate read-only connection to the server's database file, the
/// way an operator would (the server keeps running); `None` when it cannot be opened.
pub fn read_database<T>(
    data_dir: &Path,
    read: impl AsyncFnOnce(&mut sqlx::SqliteConnection) -> T,
) -> Option<T> {
    let path = data_dir.join("usage.sqlite");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=ro", path.display());
        let mut connection = sqlx::SqliteConnection::connect(&url).await.ok()?;
        let value = read(&mut connection).await;
        let _ = connection.close().await;
        Some(value)
    })
}

/// The number of stored events, read from the database file.
pub fn stored_events(data_dir: &Path) -> i64 {
    read_database(data_dir, async |connection| {
        sqlx::query_scalar::<_, i64>("SELECT value FROM counters WHERE name = 'usage_events'")
            .fetch_optional(connection)
            .await
            .ok()
            .flatten()
    })
    .flatten()
    .unwrap_or(0)
}

/// A counter or gauge without labels from `/metrics`, read with the scrape token `token`
/// (which runs no admin key check).
pub fn metric(server: &ServerProcess, token: &str, name: &str) -> u64 {
    let text = client()
        .get(server.url("/metrics"))
        .bearer_auth(token)
        .send()
        .expect("metrics")
        .text()
        .expect("body");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}
