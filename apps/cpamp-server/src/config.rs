//! Settings: built-in defaults, then the config file, then environment variables
//! (env > file > defaults), validated in one step from raw values to [`Settings`].
//!
//! The environment variable names are a compatibility contract with existing
//! deployments of the Go server, so each is mapped explicitly. A value the Go server
//! read leniently (a word where a number belongs, an odd boolean, an unknown collector
//! mode, an unreadable secret file) is read the same way but with a warning that names
//! the variable, so a deployment that started before still starts. A cpamp-only value
//! that is invalid stops the start with a message naming the variable and what it
//! accepts. Go settings that cpamp does not apply are listed in [`compat`].

pub mod compat;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use config::{Config, File, FileFormat};
use cpamp_api::state::{AutomationStartup, StartupSwitch};
use cpamp_domain::Secret;
use serde::{Deserialize, Serialize};

/// Default listen address (the Go server's).
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:18317";

/// Collector transport selection (`USAGE_COLLECTOR_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectorMode {
    Auto,
    Subscribe,
    Http,
    Resp,
}

impl CollectorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CollectorMode::Auto => "auto",
            CollectorMode::Subscribe => "subscribe",
            CollectorMode::Http => "http",
            CollectorMode::Resp => "resp",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings. Everything the process needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file that was read, if any.
    pub config_path: Option<PathBuf>,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub db_path: PathBuf,
    /// Normalised CPA base URL from `CPA_UPSTREAM_URL` (empty if unset).
    pub cpa_upstream_url: String,
    pub cpa_management_key: Secret,
    pub admin_key: Secret,
    pub data_key: Secret,
    pub data_key_path: PathBuf,
    pub collector_mode: CollectorMode,
    pub queue: String,
    /// `left` or `right`.
    pub pop_side: String,
    pub batch_size: u32,
    pub poll_interval: Duration,
    pub query_limit: i64,
    pub panel_path: Option<PathBuf>,
    pub cors_origins: Vec<String>,
    pub tls_skip_verify: bool,
    pub metrics_token: Secret,
    pub log_format: LogFormat,
    /// Limits of resumable import sessions (`USAGE_IMPORT_*`).
    pub import_sessions: ImportSessionLimits,
    /// What the collector may hold while the store refuses writes
    /// (`USAGE_HOLD_MEMORY_ITEMS`, `USAGE_HOLD_MEMORY_BYTES`, `USAGE_INBOX_MAX_BYTES`,
    /// `CPA_QUEUE_RETENTION_SECONDS`,
    /// `USAGE_SUBSCRIBE_BUFFER_ITEMS`).
    pub hold: cpamp_collector::HoldLimits,
    /// How long shutdown keeps retrying a store that refuses writes before leaving the
    /// held events to the inbox (`USAGE_SHUTDOWN_GRACE_SECONDS`).
    pub shutdown_grace: Duration,
    /// Model price sync sources (`MODEL_PRICE_SYNC_*_URL`; `off` disables one).
    pub price_sources: cpamp_api::price_sync::SourceUrls,
    /// Environment variables that were set (for env-locked settings).
    pub env_set: Vec<&'static str>,
    /// The account processing switches (quota cooldown, account actions, auto-disable).
    pub automation: cpamp_api::state::AutomationStartup,
    /// Reverse proxies whose `X-Forwarded-For` names the client
    /// (`CPA_MANAGER_TRUSTED_PROXIES`).
    pub trusted_proxies: cpamp_api::auth::TrustedProxies,
    /// Timeouts and per-client limits of the HTTP server (`HTTP_*`).
    pub http: HttpLimits,
    /// Values read leniently or not applied, each naming its variable or key; logged at
    /// start and shown by the doctor.
    pub warnings: Vec<String>,
}

impl Settings {
    /// True when `CPA_UPSTREAM_URL` and a CPA Management Key make setup unnecessary.
    pub fn env_managed_connection(&self) -> bool {
        !self.cpa_upstream_url.is_empty() && !self.cpa_management_key.is_empty()
    }
}

/// `HTTP_READ_HEADER_TIMEOUT_SECS`, `HTTP_BODY_READ_TIMEOUT_SECS`, `HTTP_KEEP_ALIVE_SECS`,
/// `HTTP_MAX_REQUESTS_PER_CONNECTION`, `HTTP_MAX_CONNECTIONS_PER_ADDRESS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub read_header_timeout: Duration,
    pub body_read_timeout: Duration,
    pub keep_alive: Duration,
    pub max_requests_per_connection: u32,
    pub max_connections_per_address: usize,
}

/// `USAGE_IMPORT_CHUNK_BYTES`, `USAGE_IMPORT_DISK_QUOTA_BYTES`,
/// `USAGE_IMPORT_MAX_SESSIONS`, `USAGE_IMPORT_SESSION_TTL_MINUTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSessionLimits {
    pub chunk_bytes: u64,
    pub disk_quota_bytes: u64,
    pub max_sessions: usize,
    pub ttl_minutes: u64,
}

/// Raw values as the config file spells them (camelCase, like the Go server's config.json).
/// Serialising a default value lists every known key (see [`known_file_keys`]).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
struct RawFile {
    http_addr: Option<String>,
    data_dir: Option<String>,
    db_path: Option<String>,
    cpa_upstream_url: Option<String>,
    management_key_file: Option<String>,
    admin_key_file: Option<String>,
    data_key_file: Option<String>,
    data_key_path: Option<String>,
    collector_mode: Option<String>,
    queue: Option<String>,
    pop_side: Option<String>,
    batch_size: Option<i64>,
    poll_interval_ms: Option<i64>,
    query_limit: Option<i64>,
    http_read_header_timeout_secs: Option<i64>,
    http_body_read_timeout_secs: Option<i64>,
    http_keep_alive_secs: Option<i64>,
    http_max_requests_per_connection: Option<i64>,
    http_max_connections_per_address: Option<i64>,
    panel_path: Option<String>,
    cors_origins: Option<Vec<String>>,
    tls_skip_verify: Option<bool>,
    metrics_token_file: Option<String>,
    log_format: Option<String>,
    usage_import_chunk_bytes: Option<i64>,
    usage_import_disk_quota_bytes: Option<i64>,
    usage_import_max_sessions: Option<i64>,
    #[serde(rename = "usageImportSessionTTLMinutes")]
    usage_import_session_ttl_minutes: Option<i64>,
    usage_hold_memory_items: Option<i64>,
    usage_hold_memory_bytes: Option<i64>,
    usage_inbox_max_bytes: Option<i64>,
    usage_subscribe_buffer_items: Option<i64>,
    cpa_queue_retention_seconds: Option<i64>,
    usage_shutdown_grace_seconds: Option<i64>,
    model_price_sync_models_dev_url: Option<String>,
    model_price_sync_lite_llm_url: Option<String>,
    model_price_sync_open_router_url: Option<String>,
    quota_cooldown_enabled: Option<bool>,
    account_actions_enabled: Option<bool>,
    account_actions_auto_disable: Option<bool>,
}

/// Where settings come from. Tests pass their own environment map.
pub struct Sources {
    pub env: HashMap<String, String>,
    /// Directory of the running executable (for `config.json` discovery).
    pub exe_dir: Option<PathBuf>,
    /// Whether a missing `CPA_MANAGER_CONFIG` file should be created (server mode).
    pub create_missing_config: bool,
}

impl Sources {
    pub fn from_process(create_missing_config: bool) -> Sources {
        Sources {
            env: std::env::vars().collect(),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf)),
            create_missing_config,
        }
    }

    /// An environment value, trimmed; empty counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
    }
}

const DEFAULT_CONFIG_CONTENT: &str =
    "{\n  \"httpAddr\": \"0.0.0.0:18317\",\n  \"dataDir\": \"./data\"\n}\n";

/// Loads and validates settings.
pub fn load(sources: &Sources) -> anyhow::Result<Settings> {
    let config_path = discover_config(sources)?;
    let config_dir = config_path
        .as_ref()
        .and_then(|path| path.parent().map(Path::to_path_buf));
    let mut warnings = Vec::new();
    let (file, file_keys): (RawFile, Vec<String>) = match &config_path {
        Some(path) => {
            let format = match path.extension().and_then(|ext| ext.to_str()) {
                Some("toml") => FileFormat::Toml,
                _ => FileFormat::Json,
            };
            let parsed = Config::builder()
                .add_source(File::from(path.as_path()).format(format))
                .build()
                .with_context(|| format!("load config: parse config {}", path.display()))?;
            let keys = parsed
                .clone()
                .try_deserialize::<std::collections::BTreeMap<String, config::Value>>()
                .map(|map| map.into_keys().collect())
                .unwrap_or_default();
            let file = parsed
                .try_deserialize()
                .with_context(|| format!("load config: parse config {}", path.display()))?;
            (file, keys)
        }
        None => (RawFile::default(), Vec::new()),
    };
    let known = known_file_keys();
    for key in &file_keys {
        let listed = compat::NOT_APPLIED
            .iter()
            .any(|setting| setting.key == Some(key.as_str()));
        if !listed && !known.contains(key) {
            warnings.push(format!(
                "config key {key} is not a cpamp setting and is ignored (see docs/configuration.md)"
            ));
        }
    }
    warnings.extend(compat::not_applied_warnings(
        |name| sources.get(name),
        |key| file_keys.iter().any(|present| present == key),
    ));
    let resolve = |value: &str| -> PathBuf {
        let path = PathBuf::from(value);
        match (&config_dir, path.is_absolute()) {
            (Some(dir), false) => dir.join(path),
            _ => path,
        }
    };
    let mut env_set = Vec::new();
    let mut env = |name: &'static str| -> Option<String> {
        let value = sources.get(name);
        if value.is_some() {
            env_set.push(name);
        }
        value
    };

    let http_addr_text = env("HTTP_ADDR")
        .or(file.http_addr.clone())
        .unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_string());
    let http_addr = parse_listen_addr(&http_addr_text)?;

    let data_dir_env = env("USAGE_DATA_DIR");
    let data_dir = match (&data_dir_env, &file.data_dir, &config_dir) {
        (Some(dir), _, _) => PathBuf::from(dir),
        (None, Some(dir), _) => resolve(dir),
        (None, None, Some(dir)) => dir.join("data"),
        // Deliberate change from the Go server (which falls back to `/data`): a plain
        // native run keeps its database in `./data`. The container image sets
        // USAGE_DATA_DIR=/data explicitly.
        (None, None, None) => PathBuf::from("./data"),
    };
    let db_path = match (env("USAGE_DB_PATH"), &file.db_path, &data_dir_env) {
        (Some(path), _, _) => PathBuf::from(path),
        (None, Some(path), None) => resolve(path),
        _ => data_dir.join("usage.sqlite"),
    };
    let data_key_path = env("CPA_MANAGER_DATA_KEY_PATH")
        .map(PathBuf::from)
        .or(file.data_key_path.as_deref().map(resolve))
        .unwrap_or_else(|| data_dir.join("data.key"));

    let cpa_upstream_url = normalize_base_url(
        &env("CPA_UPSTREAM_URL")
            .or(file.cpa_upstream_url.clone())
            .unwrap_or_default(),
    );
    let cpa_management_key = secret(
        env("CPA_MANAGEMENT_KEY"),
        env("CPA_MANAGEMENT_KEY_FILE"),
        file.management_key_file.as_deref().map(resolve),
        "/run/secrets/cpa_management_key",
        "CPA_MANAGEMENT_KEY_FILE",
        &mut warnings,
    );
    let admin_key = secret(
        env("CPA_MANAGER_ADMIN_KEY"),
        env("CPA_MANAGER_ADMIN_KEY_FILE"),
        file.admin_key_file.as_deref().map(resolve),
        "/run/secrets/cpa_admin_key",
        "CPA_MANAGER_ADMIN_KEY_FILE",
        &mut warnings,
    );
    let data_key = secret(
        env("CPA_MANAGER_DATA_KEY"),
        env("CPA_MANAGER_DATA_KEY_FILE"),
        file.data_key_file.as_deref().map(resolve),
        "/run/secrets/cpa_data_key",
        "CPA_MANAGER_DATA_KEY_FILE",
        &mut warnings,
    );
    let metrics_token = secret(
        env("METRICS_TOKEN"),
        env("METRICS_TOKEN_FILE"),
        file.metrics_token_file.as_deref().map(resolve),
        "/run/secrets/cpamp_metrics_token",
        "METRICS_TOKEN_FILE",
        &mut warnings,
    );

    let collector_mode = match env("USAGE_COLLECTOR_MODE").or(file.collector_mode.clone()) {
        None => CollectorMode::Auto,
        Some(mode) => match mode.to_ascii_lowercase().as_str() {
            "auto" => CollectorMode::Auto,
            "subscribe" => CollectorMode::Subscribe,
            "http" => CollectorMode::Http,
            "resp" => CollectorMode::Resp,
            _ => {
                warnings.push(format!(
                    "USAGE_COLLECTOR_MODE (config key collectorMode) is {mode:?}, not one of auto, subscribe, \
                     http, resp; using auto, as the earlier server did"
                ));
                CollectorMode::Auto
            }
        },
    };
    let queue = env("USAGE_RESP_QUEUE")
        .or(file.queue.clone())
        .unwrap_or_else(|| "usage".to_string());
    let pop_side = match env("USAGE_RESP_POP_SIDE").or(file.pop_side.clone()) {
        None => "right".to_string(),
        Some(side) => match side.to_ascii_lowercase().as_str() {
            "left" | "lpop" => "left".to_string(),
            "right" | "rpop" => "right".to_string(),
            _ => {
                warnings.push(format!(
                    "USAGE_RESP_POP_SIDE (config key popSide) is {side:?}, not left or right; popping from \
                     the right, as the earlier server did"
                ));
                "right".to_string()
            }
        },
    };
    let batch_size = positive(
        env("USAGE_BATCH_SIZE"),
        file.batch_size,
        100,
        "USAGE_BATCH_SIZE",
        "batchSize",
        &mut warnings,
    );
    let batch_size = u32::try_from(batch_size).map_err(|_| {
        anyhow!(
            "USAGE_BATCH_SIZE must be at most {}; got {batch_size}",
            u32::MAX
        )
    })?;
    let poll_ms = positive(
        env("USAGE_POLL_INTERVAL_MS"),
        file.poll_interval_ms,
        500,
        "USAGE_POLL_INTERVAL_MS",
        "pollIntervalMs",
        &mut warnings,
    );
    // CPA keeps events for at most an hour: a longer idle wait would lose them.
    let poll_ms = if poll_ms > MAX_POLL_INTERVAL_MS {
        warnings.push(format!(
            "USAGE_POLL_INTERVAL_MS (config key pollIntervalMs) is {poll_ms}, longer than CPA's longest queue \
             retention; using {MAX_POLL_INTERVAL_MS} so no event expires unread"
        ));
        MAX_POLL_INTERVAL_MS
    } else {
        poll_ms
    };
    let query_limit = positive(
        env("USAGE_QUERY_LIMIT"),
        file.query_limit,
        50_000,
        "USAGE_QUERY_LIMIT",
        "queryLimit",
        &mut warnings,
    );
    let [read_header, body_read, keep_alive, requests, connections] = [
        (
            "HTTP_READ_HEADER_TIMEOUT_SECS",
            "httpReadHeaderTimeoutSecs",
            file.http_read_header_timeout_secs,
            10,
        ),
        (
            "HTTP_BODY_READ_TIMEOUT_SECS",
            "httpBodyReadTimeoutSecs",
            file.http_body_read_timeout_secs,
            30,
        ),
        (
            "HTTP_KEEP_ALIVE_SECS",
            "httpKeepAliveSecs",
            file.http_keep_alive_secs,
            30,
        ),
        (
            "HTTP_MAX_REQUESTS_PER_CONNECTION",
            "httpMaxRequestsPerConnection",
            file.http_max_requests_per_connection,
            1000,
        ),
        (
            "HTTP_MAX_CONNECTIONS_PER_ADDRESS",
            "httpMaxConnectionsPerAddress",
            file.http_max_connections_per_address,
            256,
        ),
    ]
    .map(|(name, key, from_file, default)| {
        positive(env(name), from_file, default, name, key, &mut warnings).unsigned_abs()
    });
    let http = HttpLimits {
        read_header_timeout: Duration::from_secs(read_header),
        body_read_timeout: Duration::from_secs(body_read),
        keep_alive: Duration::from_secs(keep_alive),
        max_requests_per_connection: u32::try_from(requests).unwrap_or(u32::MAX),
        max_connections_per_address: usize::try_from(connections).unwrap_or(usize::MAX),
    };
    let panel_path = env("PANEL_PATH")
        .map(PathBuf::from)
        .or(file.panel_path.as_deref().map(resolve));
    let cors_origins = match env("USAGE_CORS_ORIGINS") {
        Some(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(String::from)
            .collect(),
        None => file.cors_origins.clone().unwrap_or_default(),
    };
    if cors_origins.iter().any(|origin| origin == "*") {
        warnings.push(
            "USAGE_CORS_ORIGINS (config key corsOrigins) allows every origin (\"*\"): any web page \
             can then read answers with a key its script holds; name your panel's origin instead"
                .to_string(),
        );
    }
    let tls_skip_verify = match env("USAGE_RESP_TLS_SKIP_VERIFY") {
        Some(value) => lenient_bool("USAGE_RESP_TLS_SKIP_VERIFY", &value, &mut warnings),
        None => file.tls_skip_verify.unwrap_or(false),
    };
    let log_format = match env("CPAMP_LOG_FORMAT")
        .or(file.log_format.clone())
        .as_deref()
    {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            bail!("CPAMP_LOG_FORMAT (config key logFormat) must be text or json; got {other:?}")
        }
    };
    let import_sessions = import_session_limits(
        positive(
            env("USAGE_IMPORT_CHUNK_BYTES"),
            file.usage_import_chunk_bytes,
            4 * 1024 * 1024,
            "USAGE_IMPORT_CHUNK_BYTES",
            "usageImportChunkBytes",
            &mut warnings,
        ),
        positive(
            env("USAGE_IMPORT_DISK_QUOTA_BYTES"),
            file.usage_import_disk_quota_bytes,
            16 * 1024 * 1024 * 1024,
            "USAGE_IMPORT_DISK_QUOTA_BYTES",
            "usageImportDiskQuotaBytes",
            &mut warnings,
        ),
        positive(
            env("USAGE_IMPORT_MAX_SESSIONS"),
            file.usage_import_max_sessions,
            2,
            "USAGE_IMPORT_MAX_SESSIONS",
            "usageImportMaxSessions",
            &mut warnings,
        ),
        positive(
            env("USAGE_IMPORT_SESSION_TTL_MINUTES"),
            file.usage_import_session_ttl_minutes,
            1440,
            "USAGE_IMPORT_SESSION_TTL_MINUTES",
            "usageImportSessionTTLMinutes",
            &mut warnings,
        ),
        &mut warnings,
    );
    let hold = hold_limits(
        positive(
            env("USAGE_HOLD_MEMORY_ITEMS"),
            file.usage_hold_memory_items,
            5_000,
            "USAGE_HOLD_MEMORY_ITEMS",
            "usageHoldMemoryItems",
            &mut warnings,
        ),
        positive(
            env("USAGE_HOLD_MEMORY_BYTES"),
            file.usage_hold_memory_bytes,
            4 * 1024 * 1024,
            "USAGE_HOLD_MEMORY_BYTES",
            "usageHoldMemoryBytes",
            &mut warnings,
        ),
        positive(
            env("USAGE_INBOX_MAX_BYTES"),
            file.usage_inbox_max_bytes,
            1024 * 1024 * 1024,
            "USAGE_INBOX_MAX_BYTES",
            "usageInboxMaxBytes",
            &mut warnings,
        ),
        positive(
            env("CPA_QUEUE_RETENTION_SECONDS"),
            file.cpa_queue_retention_seconds,
            60,
            "CPA_QUEUE_RETENTION_SECONDS",
            "cpaQueueRetentionSeconds",
            &mut warnings,
        ),
        positive(
            env("USAGE_SUBSCRIBE_BUFFER_ITEMS"),
            file.usage_subscribe_buffer_items,
            5_000,
            "USAGE_SUBSCRIBE_BUFFER_ITEMS",
            "usageSubscribeBufferItems",
            &mut warnings,
        ),
    );
    let shutdown_grace = Duration::from_secs(
        u64::try_from(positive(
            env("USAGE_SHUTDOWN_GRACE_SECONDS"),
            file.usage_shutdown_grace_seconds,
            15,
            "USAGE_SHUTDOWN_GRACE_SECONDS",
            "usageShutdownGraceSeconds",
            &mut warnings,
        ))
        .unwrap_or(15),
    );
    let mut price_source = |name: &'static str, key: &str, file: &Option<String>, default: &str| {
        let value = env(name)
            .or(file.clone())
            .unwrap_or_else(|| default.to_string());
        price_source_url(name, key, &value)
    };
    let price_sources = cpamp_api::price_sync::SourceUrls {
        models_dev: price_source(
            "MODEL_PRICE_SYNC_MODELS_DEV_URL",
            "modelPriceSyncModelsDevUrl",
            &file.model_price_sync_models_dev_url,
            cpamp_api::price_sync::MODELS_DEV_URL,
        )?,
        litellm: price_source(
            "MODEL_PRICE_SYNC_LITELLM_URL",
            "modelPriceSyncLiteLlmUrl",
            &file.model_price_sync_lite_llm_url,
            cpamp_api::price_sync::LITELLM_URL,
        )?,
        openrouter: price_source(
            "MODEL_PRICE_SYNC_OPENROUTER_URL",
            "modelPriceSyncOpenRouterUrl",
            &file.model_price_sync_open_router_url,
            cpamp_api::price_sync::OPENROUTER_URL,
        )?,
    };
    // Each switch: the environment (which locks it against the policy API), else the
    // config file, else off.
    let mut switch = |name: &'static str, from_file: Option<bool>| match env(name) {
        Some(value) => StartupSwitch {
            value: lenient_bool(name, &value, &mut warnings),
            from_env: true,
        },
        None => StartupSwitch {
            value: from_file.unwrap_or(false),
            from_env: false,
        },
    };
    let automation = AutomationStartup {
        quota_cooldown: switch("USAGE_QUOTA_COOLDOWN_ENABLED", file.quota_cooldown_enabled),
        account_actions: switch(
            "USAGE_ACCOUNT_ACTIONS_ENABLED",
            file.account_actions_enabled,
        ),
        auto_disable: switch(
            "USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE",
            file.account_actions_auto_disable,
        ),
    };
    let trusted_proxies = match env("CPA_MANAGER_TRUSTED_PROXIES") {
        Some(text) => cpamp_api::auth::TrustedProxies::parse(&text).map_err(|error| {
            anyhow!(
                "CPA_MANAGER_TRUSTED_PROXIES: {error}; list the reverse proxies' addresses or CIDR \
                 ranges separated by commas, e.g. 127.0.0.1,10.0.0.0/8"
            )
        })?,
        None => cpamp_api::auth::TrustedProxies::default(),
    };

    Ok(Settings {
        config_path,
        http_addr,
        data_dir,
        db_path,
        cpa_upstream_url,
        cpa_management_key,
        admin_key,
        data_key,
        data_key_path,
        collector_mode,
        queue,
        pop_side,
        batch_size,
        poll_interval: Duration::from_millis(u64::try_from(poll_ms).unwrap_or(500)),
        query_limit,
        panel_path,
        cors_origins,
        tls_skip_verify,
        metrics_token,
        log_format,
        import_sessions,
        hold,
        shutdown_grace,
        price_sources,
        env_set,
        automation,
        trusted_proxies,
        http,
        warnings,
    })
}

/// The collector's holding limits: store retries wait at most a twelfth of CPA's queue
/// retention, so a store that recovers is used long before CPA drops anything.
fn hold_limits(
    memory_items: i64,
    memory_bytes: i64,
    inbox_max_bytes: i64,
    retention_seconds: i64,
    subscribe_buffer_items: i64,
) -> cpamp_collector::HoldLimits {
    let defaults = cpamp_collector::HoldLimits::default();
    let retention = Duration::from_secs(u64::try_from(retention_seconds).unwrap_or(60));
    cpamp_collector::HoldLimits {
        memory_items: usize::try_from(memory_items).unwrap_or(defaults.memory_items),
        memory_bytes: usize::try_from(memory_bytes).unwrap_or(defaults.memory_bytes),
        inbox_max_bytes: u64::try_from(inbox_max_bytes).unwrap_or(defaults.inbox_max_bytes),
        store_retry: cpamp_collector::BackoffPolicy {
            initial: defaults.store_retry.initial,
            max: cpamp_collector::HoldLimits::store_retry_for(retention),
        },
        subscribe_buffer_items: usize::try_from(subscribe_buffer_items)
            .unwrap_or(defaults.subscribe_buffer_items),
    }
}

/// Keeps the import-session limits within what works: a chunk is one HTTP request
/// (at most 64 MiB), the quota holds at least one chunk, and the session count and
/// lifetime stay sane. An out-of-range value is clamped with a warning naming it.
fn import_session_limits(
    chunk_bytes: i64,
    disk_quota_bytes: i64,
    max_sessions: i64,
    ttl_minutes: i64,
    warnings: &mut Vec<String>,
) -> ImportSessionLimits {
    const CHUNK_MAX: i64 = 64 * 1024 * 1024;
    const SESSIONS_MAX: i64 = 1000;
    const TTL_MAX_MINUTES: i64 = 525_600;
    let mut clamp = |value: i64, limit: i64, name: &str, why: &str| {
        if value > limit {
            warnings.push(format!(
                "{name} is {value}, more than {limit} ({why}); using {limit}"
            ));
            limit
        } else {
            value
        }
    };
    let chunk_bytes = clamp(
        chunk_bytes,
        CHUNK_MAX,
        "USAGE_IMPORT_CHUNK_BYTES",
        "64 MiB: a chunk is one HTTP request",
    );
    let max_sessions = clamp(
        max_sessions,
        SESSIONS_MAX,
        "USAGE_IMPORT_MAX_SESSIONS",
        "the most that makes sense",
    );
    let ttl_minutes = clamp(
        ttl_minutes,
        TTL_MAX_MINUTES,
        "USAGE_IMPORT_SESSION_TTL_MINUTES",
        "a year",
    );
    let disk_quota_bytes = if disk_quota_bytes < chunk_bytes {
        warnings.push(format!(
            "USAGE_IMPORT_DISK_QUOTA_BYTES ({disk_quota_bytes}) is smaller than USAGE_IMPORT_CHUNK_BYTES \
             ({chunk_bytes}); using {chunk_bytes}"
        ));
        chunk_bytes
    } else {
        disk_quota_bytes
    };
    ImportSessionLimits {
        chunk_bytes: chunk_bytes as u64,
        disk_quota_bytes: disk_quota_bytes as u64,
        max_sessions: max_sessions as usize,
        ttl_minutes: ttl_minutes as u64,
    }
}

/// A price source URL: `http(s)://…`, or `off` to disable the source.
fn price_source_url(name: &str, key: &str, value: &str) -> anyhow::Result<Option<String>> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let valid = value.parse::<http::Uri>().ok().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
    });
    if !valid {
        bail!(
            "{name} (config key {key}) must be an http:// or https:// URL, or off to disable the source; got {value:?}"
        );
    }
    Ok(Some(value.to_string()))
}

/// `CPA_MANAGER_CONFIG`, else `config.json` beside the executable if it exists.
fn discover_config(sources: &Sources) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = sources.get("CPA_MANAGER_CONFIG") {
        let path = PathBuf::from(path);
        if !path.exists() {
            if !sources.create_missing_config {
                return Ok(None);
            }
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("load config: create {}", parent.display()))?;
            }
            std::fs::write(&path, DEFAULT_CONFIG_CONTENT)
                .with_context(|| format!("load config: create {}", path.display()))?;
        }
        return Ok(Some(path));
    }
    // Deliberate change from the Go server: a missing config.json beside the
    // executable is not created (that directory is often read-only, e.g.
    // /usr/local/bin); the defaults below apply instead.
    Ok(sources
        .exe_dir
        .as_ref()
        .map(|dir| dir.join("config.json"))
        .filter(|path| path.is_file()))
}

fn parse_listen_addr(text: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let mut addrs = text.to_socket_addrs().with_context(|| {
        format!(
            "HTTP_ADDR (config key httpAddr) must be host:port, e.g. 0.0.0.0:18317; got {text:?}"
        )
    })?;
    addrs
        .next()
        .ok_or_else(|| anyhow!("HTTP_ADDR {text:?} resolves to no address"))
}

/// The longest idle wait between polls: CPA's longest queue retention.
const MAX_POLL_INTERVAL_MS: i64 = 3_600_000;

/// A positive integer read like the Go server read it: a value that is not one falls
/// back to the config file's value, then to the default, with a warning naming it.
fn positive(
    env: Option<String>,
    file: Option<i64>,
    default: i64,
    name: &str,
    key: &str,
    warnings: &mut Vec<String>,
) -> i64 {
    let fallback = match file {
        Some(value) if value > 0 => value,
        Some(value) => {
            warnings.push(format!(
                "config key {key} must be a positive integer; got {value}, using {default}"
            ));
            default
        }
        None => default,
    };
    match env {
        Some(text) => match text.parse::<i64>() {
            Ok(value) if value > 0 => value,
            _ => {
                warnings.push(format!(
                    "{name} must be a positive integer; got {text:?}, using {fallback}"
                ));
                fallback
            }
        },
        None => fallback,
    }
}

/// A boolean read like the Go server read it: `1`, `true`, `yes`, `on` are true and
/// anything else is false; a value that is not a usual spelling of false gets a warning.
fn lenient_bool(name: &str, value: &str, warnings: &mut Vec<String>) -> bool {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => true,
        "0" | "false" | "no" | "off" => false,
        _ => {
            warnings.push(format!(
                "{name} is {value:?}, not one of true, false, 1, 0, yes, no, on, off; read as false, as \
                 the earlier server did"
            ));
            false
        }
    }
}

/// Every config-file key cpamp applies (the fields of `RawFile`, as spelled in the file).
pub fn known_file_keys() -> Vec<String> {
    match serde_json::to_value(RawFile::default()) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(key, _)| key).collect(),
        _ => Vec::new(),
    }
}

/// A secret from its value variable, else a file named by env, else by the config
/// file, else the Docker-secrets default (which may be absent). A named file that cannot
/// be read counts as unset, as with the Go server, but with a warning naming it.
fn secret(
    value: Option<String>,
    env_file: Option<String>,
    config_file: Option<PathBuf>,
    default_file: &str,
    file_var: &str,
    warnings: &mut Vec<String>,
) -> Secret {
    if let Some(value) = value {
        return Secret::new(value);
    }
    let explicit = env_file.map(PathBuf::from).or(config_file);
    match explicit {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => Secret::new(text.trim()),
            Err(error) => {
                warnings.push(format!(
                    "{file_var} names {}, which cannot be read ({error}); treated as unset. Fix the path or \
                     unset it",
                    path.display()
                ));
                Secret::default()
            }
        },
        None => std::fs::read_to_string(default_file)
            .map(|text| Secret::new(text.trim()))
            .unwrap_or_default(),
    }
}

/// CPA base URL normalisation (server-core.md §3.7); one implementation for config and API.
pub use cpamp_api::connection::normalize_base_url;

/// The documented example configuration (`cpamp-server config example`).
pub const EXAMPLE: &str = include_str!("../../../deploy/cpamp-server.example.json");

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(pairs: &[(&str, &str)]) -> Sources {
        Sources {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exe_dir: None,
            create_missing_config: false,
        }
    }

    #[test]
    fn defaults_need_no_configuration() {
        let settings = load(&sources(&[])).expect("defaults");
        assert_eq!(settings.http_addr.port(), 18317);
        assert_eq!(settings.db_path, PathBuf::from("./data/usage.sqlite"));
        assert_eq!(settings.data_key_path, PathBuf::from("./data/data.key"));
        assert_eq!(settings.batch_size, 100);
        assert_eq!(settings.poll_interval, Duration::from_millis(500));
        assert_eq!(settings.query_limit, 50_000);
        assert_eq!(settings.collector_mode, CollectorMode::Auto);
        // Same-origin only: no CORS header unless origins are named.
        assert!(settings.cors_origins.is_empty());
    }

    #[test]
    fn env_wins_over_the_config_file() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"httpAddr":"127.0.0.1:9000","dataDir":"store","batchSize":7,"queue":"fromfile"}"#,
        )
        .expect("write");
        let path_text = path.display().to_string();
        let settings = load(&sources(&[
            ("CPA_MANAGER_CONFIG", &path_text),
            ("USAGE_BATCH_SIZE", "9"),
        ]))
        .expect("load");
        assert_eq!(settings.http_addr.port(), 9000);
        assert_eq!(settings.data_dir, directory.path().join("store"));
        assert_eq!(settings.batch_size, 9);
        assert_eq!(settings.queue, "fromfile");
    }

    #[test]
    fn values_the_go_server_read_leniently_start_with_a_warning_naming_them() {
        let settings = load(&sources(&[
            ("USAGE_BATCH_SIZE", "abc"),
            ("USAGE_POLL_INTERVAL_MS", "-5"),
            ("USAGE_COLLECTOR_MODE", "websocket"),
            ("USAGE_RESP_POP_SIDE", "middle"),
            ("USAGE_RESP_TLS_SKIP_VERIFY", "enabled"),
            ("CPA_MANAGEMENT_KEY_FILE", "/nonexistent/cpamp-test/key"),
        ]))
        .expect("a start that worked before still works");
        assert_eq!(settings.batch_size, 100);
        assert_eq!(settings.poll_interval, Duration::from_millis(500));
        assert_eq!(settings.collector_mode, CollectorMode::Auto);
        assert_eq!(settings.pop_side, "right");
        assert!(
            !settings.tls_skip_verify,
            "an odd boolean reads as false, as before"
        );
        assert!(settings.cpa_management_key.is_empty());
        let warnings = settings.warnings.join("\n");
        for expected in [
            "USAGE_BATCH_SIZE must be a positive integer; got \"abc\", using 100",
            "USAGE_POLL_INTERVAL_MS must be a positive integer; got \"-5\", using 500",
            "USAGE_COLLECTOR_MODE (config key collectorMode) is \"websocket\"",
            "USAGE_RESP_POP_SIDE (config key popSide) is \"middle\"",
            "USAGE_RESP_TLS_SKIP_VERIFY is \"enabled\"",
            "CPA_MANAGEMENT_KEY_FILE names /nonexistent/cpamp-test/key",
        ] {
            assert!(
                warnings.contains(expected),
                "missing {expected:?} in:\n{warnings}"
            );
        }
        assert_eq!(settings.warnings.len(), 6, "{warnings}");

        let clamped = load(&sources(&[("USAGE_POLL_INTERVAL_MS", "7200000")])).expect("load");
        assert_eq!(clamped.poll_interval, Duration::from_secs(3600));
        assert!(clamped.warnings[0].contains("longer than CPA's longest queue retention"));
        assert!(load(&sources(&[])).expect("defaults").warnings.is_empty());
    }

    #[test]
    fn invalid_cpamp_values_name_the_variable_and_what_it_accepts() {
        let error = load(&sources(&[("HTTP_ADDR", "nope")])).expect_err("invalid");
        assert!(error.to_string().contains("HTTP_ADDR"), "{error}");
        let error = load(&sources(&[("CPAMP_LOG_FORMAT", "xml")])).expect_err("invalid");
        assert!(
            error.to_string().contains("must be text or json"),
            "{error}"
        );
    }

    #[test]
    fn config_file_keys_that_are_unknown_or_not_applied_are_named() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"httpAddr":"127.0.0.1:0","pprofAddr":"127.0.0.1:6060","batchSise":5,"batchSize":0}"#,
        )
        .expect("write");
        let path_text = path.display().to_string();
        let settings = load(&sources(&[("CPA_MANAGER_CONFIG", &path_text)])).expect("load");
        let warnings = settings.warnings.join("\n");
        assert!(
            warnings.contains("config key batchSise is not a cpamp setting"),
            "{warnings}"
        );
        assert!(
            warnings.contains("config key pprofAddr is accepted but not applied"),
            "{warnings}"
        );
        assert!(
            warnings.contains("config key batchSize must be a positive integer; got 0, using 100"),
            "{warnings}"
        );
        assert_eq!(settings.warnings.len(), 3, "{warnings}");
        assert_eq!(settings.batch_size, 100);
        assert!(known_file_keys().contains(&"httpAddr".to_string()));
    }

    #[test]
    fn price_sources_default_to_the_public_lists_and_can_be_moved_or_switched_off() {
        let settings = load(&sources(&[])).expect("defaults");
        assert_eq!(
            settings.price_sources.models_dev.as_deref(),
            Some(cpamp_api::price_sync::MODELS_DEV_URL)
        );
        let settings = load(&sources(&[
            (
                "MODEL_PRICE_SYNC_LITELLM_URL",
                "http://127.0.0.1:9/prices.json",
            ),
            ("MODEL_PRICE_SYNC_OPENROUTER_URL", "OFF"),
        ]))
        .expect("load");
        assert_eq!(
            settings.price_sources.litellm.as_deref(),
            Some("http://127.0.0.1:9/prices.json")
        );
        assert_eq!(settings.price_sources.openrouter, None);
        let error = load(&sources(&[(
            "MODEL_PRICE_SYNC_MODELS_DEV_URL",
            "ftp://x/y",
        )]))
        .expect_err("invalid");
        assert!(
            error
                .to_string()
                .contains("MODEL_PRICE_SYNC_MODELS_DEV_URL (config key modelPriceSyncModelsDevUrl) must be an http:// or https:// URL, or off"),
            "{error}"
        );
    }

    #[test]
    fn base_urls_are_normalised_like_the_go_server() {
        assert_eq!(
            normalize_base_url("cpa:8317/v0/management/"),
            "http://cpa:8317"
        );
        assert_eq!(normalize_base_url("https://h/cpa/v0/"), "https://h/cpa");
        assert_eq!(normalize_base_url("  "), "");
        assert_eq!(normalize_base_url("http://h:1//"), "http://h:1");
    }

    #[test]
    fn import_session_limits_are_read_and_validated() {
        let settings = load(&sources(&[])).expect("defaults");
        assert_eq!(
            settings.import_sessions,
            ImportSessionLimits {
                chunk_bytes: 4_194_304,
                disk_quota_bytes: 17_179_869_184,
                max_sessions: 2,
                ttl_minutes: 1440,
            }
        );
        let settings = load(&sources(&[
            ("USAGE_IMPORT_CHUNK_BYTES", "1048576"),
            ("USAGE_IMPORT_DISK_QUOTA_BYTES", "1073741824"),
            ("USAGE_IMPORT_MAX_SESSIONS", "4"),
            ("USAGE_IMPORT_SESSION_TTL_MINUTES", "60"),
        ]))
        .expect("load");
        assert_eq!(settings.import_sessions.chunk_bytes, 1_048_576);
        assert_eq!(settings.import_sessions.max_sessions, 4);
        assert_eq!(settings.import_sessions.ttl_minutes, 60);
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"usageImportChunkBytes":2048,"usageImportDiskQuotaBytes":4096,"usageImportMaxSessions":3,"usageImportSessionTTLMinutes":7}"#,
        )
        .expect("write");
        let path_text = path.display().to_string();
        let settings = load(&sources(&[("CPA_MANAGER_CONFIG", &path_text)])).expect("load");
        assert_eq!(
            settings.import_sessions,
            ImportSessionLimits {
                chunk_bytes: 2048,
                disk_quota_bytes: 4096,
                max_sessions: 3,
                ttl_minutes: 7,
            }
        );
        // Values the Go server read leniently fall back with a warning naming them.
        for (name, value, needle, chunk) in [
            (
                "USAGE_IMPORT_CHUNK_BYTES",
                "0",
                "USAGE_IMPORT_CHUNK_BYTES must be a positive integer",
                4_194_304,
            ),
            (
                "USAGE_IMPORT_CHUNK_BYTES",
                "999999999",
                "more than 67108864",
                67_108_864,
            ),
            (
                "USAGE_IMPORT_MAX_SESSIONS",
                "two",
                "USAGE_IMPORT_MAX_SESSIONS must be a positive integer",
                4_194_304,
            ),
            (
                "USAGE_IMPORT_SESSION_TTL_MINUTES",
                "-5",
                "USAGE_IMPORT_SESSION_TTL_MINUTES must be a positive integer",
                4_194_304,
            ),
        ] {
            let settings = load(&sources(&[(name, value)])).expect(name);
            assert!(
                settings
                    .warnings
                    .iter()
                    .any(|warning| warning.contains(needle)),
                "{name}={value}: {:?}",
                settings.warnings
            );
            assert_eq!(
                settings.import_sessions.chunk_bytes, chunk,
                "{name}={value}"
            );
        }
        let settings = load(&sources(&[("USAGE_IMPORT_DISK_QUOTA_BYTES", "1000")])).expect("load");
        assert_eq!(settings.import_sessions.disk_quota_bytes, 4_194_304);
        assert!(
            settings
                .warnings
                .iter()
                .any(|warning| warning.contains("smaller than USAGE_IMPORT_CHUNK_BYTES"))
        );
    }

    #[test]
    fn secrets_never_print() {
        let settings =
            load(&sources(&[("CPA_MANAGEMENT_KEY", "mgmt-secret-value")])).expect("load");
        assert!(!format!("{settings:?}").contains("mgmt-secret-value"));
    }
}
