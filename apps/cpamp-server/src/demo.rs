//! `cpamp-server demo`: the normal server fed by the built-in fake CPA, so a newcomer
//! sees requests, dashboards and costs without running CPA.
//!
//! The fake listens on a free loopback port and the server treats it as an env-managed
//! connection: nothing about it is written to SQLite. The demo keeps its own database in
//! `<data dir>/demo` (or `--data-dir`), apart from real data, so made-up usage never mixes
//! with real usage (even in the container image, whose data directory is the volume) and
//! a demo can run beside a real server (they take different process locks).
//!
//! The way in is printed on every start: the demo's admin key lives in plain text in
//! `demo-admin-key` beside the demo database (it opens made-up data only), and the demo
//! database's credential is set to it whenever they differ.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cpamp_api::auth;
use cpamp_domain::{Secret, keys};
use cpamp_storage::{Options, SqliteStore};
use cpamp_testkit::{FakeCpa, FakeCpaOptions};

use crate::config::Settings;
use crate::startup::{self, Application};

/// The demo's directory inside the data directory when `--data-dir` is not given.
pub const DEMO_SUBDIR: &str = "demo";
/// The file beside the demo database that holds the demo's admin key.
pub const DEMO_KEY_FILE: &str = "demo-admin-key";

/// Points the settings at the demo's own directory: `data_dir` if given, else
/// `<data dir>/demo`. The database, `data.key` and the admin key all live there; a
/// data key or admin key from the environment is not used.
pub fn use_demo_data_dir(settings: &mut Settings, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let explicit = data_dir.is_some();
    let dir = data_dir.unwrap_or_else(|| settings.data_dir.join(DEMO_SUBDIR));
    let db_path = dir.join("usage.sqlite");
    if explicit && db_path.exists() && !dir.join(DEMO_KEY_FILE).exists() {
        bail!(
            "{} holds a database that the demo did not create; the demo keeps made-up data apart from real \
             data, so pass --data-dir with an empty directory or one an earlier demo used",
            dir.display()
        );
    }
    settings.data_key_path = dir.join("data.key");
    settings.data_key = Secret::default();
    settings.db_path = db_path;
    settings.data_dir = dir;
    settings.admin_key = Secret::new(demo_admin_key(&settings.data_dir)?);
    Ok(())
}

/// Reads the demo's admin key, or creates it on the first demo start.
fn demo_admin_key(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(DEMO_KEY_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        return Ok(text.trim().to_string());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key = keys::generate_admin_key(&mut rand::rng());
    write_private(&path, &format!("{key}\n"))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// Sets the demo database's credential to the demo key when it holds another one (an
/// older demo, or a reset). Only ever called on the demo's own database.
async fn align_demo_credential(settings: &Settings) -> anyhow::Result<()> {
    if !settings.db_path.is_file() {
        return Ok(());
    }
    let lock =
        crate::lock::acquire(&settings.db_path).context("acquire manager database process lock")?;
    let store = SqliteStore::open(Options::new(&lock.db_path))
        .await
        .context("open sqlite")?;
    let key = settings.admin_key.expose();
    let result = async {
        let (authenticator, _) =
            auth::ensure_admin_credential(&store, Some(key), startup::now_ms()).await?;
        if authenticator.verify(key).await != Ok(true) {
            auth::replace_credential(&store, key, "demo", startup::now_ms(), true).await?;
        }
        Ok::<(), cpamp_api::ApiError>(())
    }
    .await;
    store.close().await;
    drop(lock);
    result.map_err(|error| anyhow::anyhow!("set the demo admin key: {error}"))
}

/// Starts the fake CPA, points the server at it and serves until `shutdown` resolves.
/// Made-up traffic flows a few events per second with a burst now and then.
pub async fn run(
    mut settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    align_demo_credential(&settings).await?;
    let key = demo_key();
    let mut options = FakeCpaOptions::new(key.clone());
    options.seed = random_u64();
    let cpa = Arc::new(
        FakeCpa::start(options)
            .await
            .context("start the demo CPA on a loopback port")?,
    );
    settings.cpa_upstream_url = cpa.base_url();
    settings.cpa_management_key = Secret::new(key);
    tracing::warn!(
        cpa = %cpa.base_url(),
        db_path = %settings.db_path.display(),
        "demo mode: a built-in fake CPA at {} feeds made-up usage events into {}; this is demo data, kept apart from real data",
        cpa.base_url(),
        settings.db_path.display()
    );
    let admin_key = settings.admin_key.clone();
    let key_file = settings.data_dir.join(DEMO_KEY_FILE);

    let application = Application::build(settings).await?;
    let addr = application.local_addr();
    let host = match addr.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    tracing::warn!(
        "demo: open http://{host}:{}/management.html and log in with the CPAMP Admin Key {} (demo data only; \
         the key is kept in {} and shown on every demo start)",
        addr.port(),
        admin_key.expose(),
        key_file.display()
    );
    let traffic = tokio::spawn(traffic(cpa.clone()));
    // Traffic stops first, so the collector's final drain is not chasing new events.
    let abort = traffic.abort_handle();
    let shutdown = async move {
        shutdown.await;
        abort.abort();
    };
    let result = application.run_until_stopped(shutdown).await;
    let _ = traffic.await;
    cpa.stop();
    result
}

/// A backlog so the panel has something to show at once, then a few events per second
/// and, about every 20 seconds, a burst like a batch job would cause.
async fn traffic(cpa: Arc<FakeCpa>) {
    let mut rng = XorShift(random_u64() | 1);
    cpa.emit(120).await;
    let mut until_burst = 20 + rng.below(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(900))).await;
        let count = if until_burst == 0 {
            until_burst = 20 + rng.below(10);
            40 + rng.below(80)
        } else {
            until_burst -= 1;
            1 + rng.below(3)
        };
        // Bounded by the arms above, so the conversion never fails.
        cpa.emit(usize::try_from(count).unwrap_or(1)).await;
    }
}

/// A per-run key for the fake CPA: the server authenticates to it like to a real CPA.
fn demo_key() -> String {
    format!("demo-{:016x}{:016x}", random_u64(), random_u64())
}

/// Randomness from the standard library's per-process hash keys; enough for a demo key
/// and traffic pacing, with no extra dependency.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

struct XorShift(u64);

impl XorShift {
    /// A value in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}
