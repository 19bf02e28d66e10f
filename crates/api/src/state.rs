//! Shared application state handed to every handler.

use cpamp_collector::{Collector, Mode, PopSide};
use cpamp_domain::Secret;
use cpamp_domain::analytics::query::AnalyticsStore;
use cpamp_domain::automation::quota::QuotaStore;
use cpamp_domain::automation::runs::InspectionStore;
use cpamp_domain::automation::store::{AuditStore, CandidateStore, CooldownStore};
use cpamp_domain::crypto::{DataKey, SealError};
use cpamp_domain::ports::{
    DatabaseBackup, DatabaseStats, EventSink, EventStream, GapStore, KeyHints, SettingsStore,
    StoreStats,
};
use cpamp_domain::prices::PriceStore;

use crate::auth::LoginLimiter;
use crate::automation::Automation;
use crate::automation::ingest::IngestSink;

/// Everything the API needs from storage, as one bound. The binary names the
/// concrete type once (`configure::<SqliteStore>`).
pub trait Store:
    EventSink
    + SettingsStore
    + StoreStats
    + KeyHints
    + AnalyticsStore
    + GapStore
    + DatabaseStats
    + EventStream
    + DatabaseBackup
    + PriceStore
    + CooldownStore
    + CandidateStore
    + AuditStore
    + InspectionStore
    + QuotaStore
{
}

impl<T> Store for T where
    T: EventSink
        + SettingsStore
        + StoreStats
        + KeyHints
        + AnalyticsStore
        + GapStore
        + DatabaseStats
        + EventStream
        + DatabaseBackup
        + PriceStore
        + CooldownStore
        + CandidateStore
        + AuditStore
        + InspectionStore
        + QuotaStore
{
}

/// Per-process state shared by all workers (registered as `web::Data<AppState<S>>`;
/// the [`crate::auth::AdminAuthenticator`] is registered beside it).
pub struct AppState<S: Store> {
    /// The store every route reads and writes through.
    pub store: S,
    /// Unix ms when the application was built; reported by `/usage-service/info`.
    pub started_at_ms: i64,
    /// Canonical absolute path of the SQLite database.
    pub db_path: String,
    /// `USAGE_QUERY_LIMIT`: most events the compatible usage endpoint and export return.
    pub query_limit: i64,
    /// Connection and collector values from env/config file, the defaults under the
    /// saved manager config.
    pub startup: StartupConfig,
    /// The key that seals the saved CPA Management Key.
    pub data_key: DataKeyState,
    /// The one collector of this process. Setup and config changes restart or stop it.
    /// It stores through the ingest pipeline, which labels events with CPA's auth files.
    pub collector: Collector<IngestSink<S>>,
    /// Account automation services (enrichment, …).
    pub automation: Automation,
    /// Serialises changes of the CPA connection (setup, config PUT) and the collector
    /// restarts that follow them, so two saves never interleave.
    pub config_lock: tokio::sync::Mutex<()>,
    /// Failed admin logins per client address.
    pub login_limiter: LoginLimiter,
    /// Collection gaps seen but not written yet (the store may be what fails).
    pub gaps: crate::gaps::GapView,
}

/// The env-managed CPA connection (`CPA_UPSTREAM_URL` + `CPA_MANAGEMENT_KEY(_FILE)`).
#[derive(Debug, Clone)]
pub struct EnvConnection {
    /// Normalised base URL.
    pub base_url: String,
    /// CPA's management key.
    pub management_key: Secret,
}

/// Values from the environment and config file (server-core §1.3).
#[derive(Debug, Clone)]
pub struct StartupConfig {
    /// The CPA connection from the environment, which overrides a saved one.
    pub env_connection: Option<EnvConnection>,
    /// `USAGE_COLLECTOR_MODE`: which transports the collector may use.
    pub collector_mode: Mode,
    /// The RESP list key and channel.
    pub queue: String,
    /// Which RESP pop command is sent.
    pub pop_side: PopSide,
    /// Items per pop.
    pub batch_size: u32,
    /// Wait after an empty pop, in ms.
    pub poll_interval_ms: u64,
    /// Most events the compatible usage endpoint and export return.
    pub query_limit: i64,
    /// Skip certificate checks for RESP over TLS.
    pub tls_skip_verify: bool,
    /// How long shutdown keeps retrying a store that refuses writes.
    pub shutdown_grace: std::time::Duration,
    /// The account processing switches from env and config file.
    pub automation: AutomationStartup,
}

/// One automation switch as the environment or config file set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupSwitch {
    /// Whether the switch is on.
    pub value: bool,
    /// Set by its environment variable, which locks it against changes through the API.
    pub from_env: bool,
}

/// `USAGE_QUOTA_COOLDOWN_ENABLED`, `USAGE_ACCOUNT_ACTIONS_ENABLED` and
/// `USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE` (or their config-file keys).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AutomationStartup {
    /// Quota cooldowns.
    pub quota_cooldown: StartupSwitch,
    /// The account action queue.
    pub account_actions: StartupSwitch,
    /// Automatic disabling of queued credentials.
    pub auto_disable: StartupSwitch,
}

impl Default for StartupConfig {
    fn default() -> StartupConfig {
        StartupConfig {
            env_connection: None,
            collector_mode: Mode::Auto,
            queue: "usage".to_string(),
            pop_side: PopSide::Right,
            batch_size: 100,
            poll_interval_ms: 500,
            query_limit: 50_000,
            tls_skip_verify: false,
            shutdown_grace: std::time::Duration::from_secs(15),
            automation: AutomationStartup::default(),
        }
    }
}

/// Where the data key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeyOrigin {
    /// `CPA_MANAGER_DATA_KEY` / `_FILE` / config `dataKeyFile`.
    Env,
    /// An existing `data.key` file.
    File,
    /// Created at this start (first start, or the previous file was missing or unusable).
    Created,
}

/// The data key in use.
#[derive(Debug, Clone)]
pub struct DataKeyState {
    key: DataKey,
    /// Where the key came from (backups include `data.key` only when it is a file).
    pub origin: DataKeyOrigin,
}

impl DataKeyState {
    /// The data key `key`, which came from `origin`.
    pub fn new(key: DataKey, origin: DataKeyOrigin) -> DataKeyState {
        DataKeyState { key, origin }
    }

    /// Seals a secret for a settings field under a fresh random nonce.
    pub fn seal(&self, field: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        self.key.seal(field, plaintext, nonce)
    }

    /// Opens a secret sealed for `field`; fails when another key or field sealed it.
    pub fn open(&self, field: &str, stored: &str) -> Result<String, SealError> {
        self.key.open(field, stored)
    }
}

impl<S: Store> crate::auth::AuthBackend for AppState<S> {
    fn is_cpa_management_key<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + 'a>> {
        Box::pin(async move {
            if let Some(env) = &self.startup.env_connection
                && crate::auth::same_secret(token, env.management_key.expose())
            {
                return true;
            }
            match crate::manager_config::load(self).await {
                Ok(effective) => crate::auth::same_secret(token, effective.management_key.expose()),
                Err(_) => false,
            }
        })
    }

    fn is_cpa_client_api_key<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + 'a>> {
        Box::pin(async move {
            use sha2::Digest;
            let hash = hex::encode(sha2::Sha256::digest(token.trim().as_bytes()));
            self.store
                .is_known_api_key_hash(&hash)
                .await
                .unwrap_or(false)
        })
    }

    fn upgrade_credential<'a>(
        &'a self,
        authenticator: &'a crate::auth::AdminAuthenticator,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
        Box::pin(async move {
            let now = jiff::Timestamp::now().as_millisecond();
            let source = "upgraded";
            match crate::auth::replace_credential(&self.store, key, source, now, false).await {
                Ok(record) => {
                    authenticator.upgrade(record.phc);
                    tracing::info!("admin credential re-hashed with argon2id");
                }
                Err(error) => tracing::warn!(%error, "re-hash legacy admin credential"),
            }
        })
    }

    fn limiter(&self) -> &LoginLimiter {
        &self.login_limiter
    }
}
