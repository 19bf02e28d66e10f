//! Live-ingest helpers: a fake CPA running in the test process, events emitted in bursts,
//! and what the server committed, read straight from its SQLite file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cpamp_testkit::{EmittedEvent, FakeCpa, FakeCpaOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::runtime::Runtime;

const KEY: &str = "it-management-key";

/// One runtime for every fake CPA and database connection of the test binary; its
/// workers keep the fakes serving while test threads block.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// A fake CPA for one test.
pub struct LiveCpa {
    pub cpa: FakeCpa,
}

impl LiveCpa {
    /// Starts a fake with an hour of retention (so slow debug builds lose nothing to
    /// pruning); `adjust` changes any other option.
    pub fn start(adjust: impl FnOnce(&mut FakeCpaOptions)) -> LiveCpa {
        let mut options = FakeCpaOptions::new(KEY);
        options.retention = Duration::from_secs(3600);
        adjust(&mut options);
        let cpa = runtime()
            .block_on(FakeCpa::start(options))
            .expect("start fake CPA");
        LiveCpa { cpa }
    }

    /// Environment that makes the server collect from this fake in `mode`, quickly.
    pub fn server_env(&self, mode: &str) -> Vec<(String, String)> {
        vec![
            ("CPA_UPSTREAM_URL".to_string(), self.cpa.base_url()),
            ("CPA_MANAGEMENT_KEY".to_string(), KEY.to_string()),
            ("USAGE_COLLECTOR_MODE".to_string(), mode.to_string()),
            ("USAGE_POLL_INTERVAL_MS".to_string(), "50".to_string()),
        ]
    }

    /// Starts the real server collecting from this fake with `SUBSCRIBE` (so CPA's
    /// refresh announcements arrive), the test admin key and `extra` environment, and
    /// waits until it is subscribed.
    pub fn start_server(
        &self,
        dir: &tempfile::TempDir,
        extra: &[(&str, &str)],
    ) -> super::ServerProcess {
        let mut env = self.server_env("auto");
        env.push(("CPA_MANAGER_ADMIN_KEY".into(), super::ADMIN_KEY.into()));
        env.extend(
            extra
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        let server = super::ServerProcess::start(dir.path(), &env_refs(&env));
        assert!(
            server.wait_for_log("collector starting", Duration::from_secs(10)),
            "{}",
            server.log_text()
        );
        assert!(self.wait_for_subscriber(Duration::from_secs(10)));
        server
    }

    /// Emits `count` events as CPA would, over time.
    pub fn emit(&self, count: usize) -> Vec<EmittedEvent> {
        runtime().block_on(self.cpa.emit(count))
    }

    /// Emits `total` events in bursts of `burst`, pausing `pause` between bursts.
    pub fn emit_bursts(&self, total: usize, burst: usize, pause: Duration) -> Vec<EmittedEvent> {
        let mut emitted = Vec::with_capacity(total);
        while emitted.len() < total {
            let count = burst.min(total - emitted.len());
            emitted.extend(self.emit(count));
            std::thread::sleep(pause);
        }
        emitted
    }

    /// Stops the fake (its queue is lost), keeps it down for `down_for`, starts it again.
    pub fn restart(&self, down_for: Duration) {
        runtime()
            .block_on(self.cpa.restart(down_for))
            .expect("restart fake CPA");
    }

    /// Waits until CPA's queue is empty: everything emitted was popped.
    pub fn wait_until_popped(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.cpa.queued_len() == 0)
    }

    /// Waits until somebody is subscribed.
    pub fn wait_for_subscriber(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.cpa.subscriber_count() > 0)
    }
}

impl Drop for LiveCpa {
    fn drop(&mut self) {
        self.cpa.stop();
    }
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Borrowed pairs for [`super::ServerProcess::start`].
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// The server's database in `data_dir`.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("usage.sqlite")
}

/// How many records each request id has. Records legitimately share an id (CPA's
/// additional-model records), so exactly-once means equal counts per id.
pub fn expected_counts<'a>(
    events: impl IntoIterator<Item = &'a EmittedEvent>,
) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts.entry(event.request_id.clone()).or_insert(0) += 1;
    }
    counts
}

/// A read-only connection to the server's database, beside the running server.
pub async fn read_only(db: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(Duration::from_secs(5));
    SqliteConnection::connect_with(&options)
        .await
        .expect("open the server's database read-only")
}

/// Stored records per request id, read through a read-only connection beside the server.
pub fn stored_counts(db: &Path) -> BTreeMap<String, i64> {
    runtime().block_on(async {
        let mut connection = read_only(db).await;
        let rows: Vec<(Option<String>, i64)> =
            sqlx::query_as("SELECT request_id, COUNT(*) FROM usage_events GROUP BY request_id")
                .fetch_all(&mut connection)
                .await
                .expect("count stored events");
        let _ = connection.close().await;
        rows.into_iter()
            .map(|(id, count)| (id.unwrap_or_default(), count))
            .collect()
    })
}

/// Total stored events.
pub fn stored_total(db: &Path) -> i64 {
    stored_counts(db).values().sum()
}

/// Waits until the database holds exactly `expected` (per request id), then asserts it;
/// on a mismatch the message says what is missing, duplicated or unexpected.
pub fn assert_stored_exactly_once(
    db: &Path,
    expected: &BTreeMap<String, i64>,
    timeout: Duration,
    log: impl Fn() -> String,
) {
    let mut stored = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        stored = stored_counts(db);
        if &stored == expected {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|(id, count)| stored.get(*id).copied().unwrap_or(0) < **count)
        .map(|(id, _)| id.as_str())
        .collect();
    let duplicated: Vec<_> = stored
        .iter()
        .filter(|(id, count)| expected.get(*id).is_some_and(|wanted| *count > wanted))
        .map(|(id, _)| id.as_str())
        .collect();
    let unexpected: Vec<_> = stored
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .map(String::as_str)
        .collect();
    panic!(
        "stored {} events, expected {}: {} ids missing (first {:?}), {} duplicated (first {:?}), {} unexpected (first {:?})\nlog:\n{}",
        stored.values().sum::<i64>(),
        expected.values().sum::<i64>(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        duplicated.len(),
        duplicated.iter().take(5).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(5).collect::<Vec<_>>(),
        log()
    );
}

/// A second connection holding SQLite's write lock (`BEGIN EXCLUSIVE`), as another
/// process or a backup tool would; every write by the server waits, then fails busy.
pub struct WriteLock {
    connection: SqliteConnection,
}

impl WriteLock {
    pub fn hold(db: &Path) -> WriteLock {
        runtime().block_on(async {
            let options = SqliteConnectOptions::new()
                .filename(db)
                .busy_timeout(Duration::from_secs(10));
            let mut connection = SqliteConnection::connect_with(&options)
                .await
                .expect("open a second connection");
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut connection)
                .await
                .expect("take the write lock");
            WriteLock { connection }
        })
    }

    pub fn release(self) {
        let WriteLock { mut connection } = self;
        runtime().block_on(async {
            sqlx::query("COMMIT")
                .execute(&mut connection)
                .await
                .expect("release the write lock");
            let _ = connection.close().await;
        });
    }
}
