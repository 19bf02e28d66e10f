//! `cpamp-server demo`: the normal server fed by the built-in fake CPA, so a newcomer
//! sees requests, dashboards and costs without running CPA.
//!
//! The fake listens on a free loopback port and the server treats it as an env-managed
//! connection: nothing about it is written to SQLite. Unless `USAGE_DATA_DIR` or
//! `USAGE_DB_PATH` says otherwise, the data lives in `./data/demo`, apart from the real
//! `./data`, so made-up usage never mixes with real usage and a demo can run beside a
//! real server (they take different process locks).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cpamp_domain::Secret;
use cpamp_testkit::{FakeCpa, FakeCpaOptions};

use crate::config::{Settings, Sources};
use crate::startup::Application;

/// The demo's data directory when neither `USAGE_DATA_DIR` nor `USAGE_DB_PATH` is set.
pub const DEMO_DATA_DIR: &str = "./data/demo";

/// Points the data directory at [`DEMO_DATA_DIR`] unless the environment names one.
pub fn use_demo_data_dir(sources: &mut Sources) {
    let named = |name: &str| {
        sources
            .env
            .get(name)
            .is_some_and(|value| !value.trim().is_empty())
    };
    if !named("USAGE_DATA_DIR") && !named("USAGE_DB_PATH") {
        sources
            .env
            .insert("USAGE_DATA_DIR".to_string(), DEMO_DATA_DIR.to_string());
    }
}

/// Starts the fake CPA, points the server at it and serves until `shutdown` resolves.
/// Made-up traffic flows a few events per second with a burst now and then.
pub async fn run(
    mut settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
        "demo mode: a built-in fake CPA at {} feeds made-up usage events into {}; this is demo data, keep it apart from real data (USAGE_DATA_DIR)",
        cpa.base_url(),
        settings.db_path.display()
    );

    let application = Application::build(settings).await?;
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
