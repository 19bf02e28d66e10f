//! The manager config: the saved CPA connection and collector settings.
//!
//! Stored as JSON in settings `manager_config_v1` (same shape as the Go server, so its
//! databases keep working), with the legacy `setup` row written beside it on every save.
//! The CPA Management Key is stored only sealed with the data key
//! ([`cpamp_domain::crypto`]); the associated data names the settings field, so the two
//! copies cannot be swapped.
//!
//! [`load`] resolves what is in effect (server-core §3.6): startup defaults, overlaid by
//! the saved config, else the legacy `setup` row, and finally the env-managed connection
//! (`CPA_UPSTREAM_URL` + `CPA_MANAGEMENT_KEY`), which wins for every connection and
//! collector field. A saved key that cannot be opened (lost or replaced `data.key`, or a
//! value sealed by the Go server) is not an error: the connection counts as "needs to be
//! saved again", and the reason is kept for `/usage-service/info` and the logs.

use cpamp_collector::{Mode, PopSide};
use cpamp_domain::Secret;
use cpamp_domain::automation::inspection::InspectionConfig;
use cpamp_domain::crypto::SealError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::state::{AppState, Store};

/// Settings key of the manager config.
pub const MANAGER_CONFIG_KEY: &str = "manager_config_v1";
/// Settings key of the legacy setup document.
pub const SETUP_KEY: &str = "setup";
/// Associated data of the sealed key in the manager config.
pub const MANAGER_KEY_FIELD: &str = "cpamp/settings/manager_config_v1/cpaConnection.managementKey";
/// Associated data of the sealed key in the legacy setup row.
pub const SETUP_KEY_FIELD: &str = "cpamp/settings/setup/managementKey";

/// `manager_config_v1` as stored. Unknown members are kept as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredConfig {
    /// `cpaConnection`: the CPA URL and the sealed management key.
    #[serde(default)]
    pub cpa_connection: StoredConnection,
    /// `collector`: the saved collector settings.
    #[serde(default)]
    pub collector: StoredCollector,
    /// `codexInspection`: the inspection settings, as the panel saved them.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub codex_inspection: Value,
    /// `updatedAtMs`: Unix ms of the last save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<i64>,
    /// Members this server does not know, kept on every save.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `cpaConnection` as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredConnection {
    /// `cpaBaseUrl`: CPA's base URL.
    #[serde(default)]
    pub cpa_base_url: String,
    /// Sealed (`enc:v2:…`), or plaintext/`enc:v1:` in databases of older releases.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub management_key: String,
}

/// `collector` as stored; a missing member takes the startup value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredCollector {
    /// `enabled`: the Request Monitoring switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `collectorMode`: `auto`, `subscribe`, `http` or `resp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_mode: Option<String>,
    /// `queue`: RESP list key and channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// `popSide`: `left` or `right`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pop_side: Option<String>,
    /// `batchSize`: items per pop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    /// `pollIntervalMs`: wait after an empty pop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<i64>,
    /// `queryLimit`: most events the compatible usage endpoint returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_limit: Option<i64>,
    /// `tlsSkipVerify`: skip certificate checks for RESP over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
}

/// The legacy `setup` row: `{cpaBaseUrl, managementKey, queue, popSide}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSetup {
    /// `cpaBaseUrl`: CPA's base URL.
    #[serde(default)]
    pub cpa_base_url: String,
    /// `managementKey`: sealed like the manager config's, or plaintext from older releases.
    #[serde(default)]
    pub management_key: String,
    /// `queue`: RESP list key and channel.
    #[serde(default)]
    pub queue: String,
    /// `popSide`: `left` or `right`.
    #[serde(default)]
    pub pop_side: String,
}

/// Where the effective connection comes from (`source` in `/usage-service/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Nothing saved and no env connection.
    None,
    /// The saved manager config (or the legacy `setup` row).
    Db,
    /// `CPA_UPSTREAM_URL` and `CPA_MANAGEMENT_KEY`.
    Env,
}

impl ConfigSource {
    /// The source as `/usage-service/config` names it ("" for none).
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::None => "",
            ConfigSource::Db => "db",
            ConfigSource::Env => "env",
        }
    }
}

/// Collector settings in effect.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorValues {
    /// The panel's "Request Monitoring" switch.
    pub enabled: bool,
    /// Which transports the collector may use.
    pub mode: Mode,
    /// RESP list key and channel.
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
}

/// The configuration in effect, with the CPA Management Key opened.
#[derive(Debug, Clone)]
pub struct EffectiveConfig {
    /// CPA's normalised base URL ("" when none).
    pub base_url: String,
    /// Empty when none is saved or the saved one cannot be opened.
    pub management_key: Secret,
    /// Set when a key is saved but cannot be opened with the current data key.
    pub key_unreadable: Option<SealError>,
    /// The collector settings in effect.
    pub collector: CollectorValues,
    /// The saved inspection settings (`null` when none).
    pub codex_inspection: Value,
    /// Unix ms of the last save.
    pub updated_at_ms: Option<i64>,
    /// Where the connection comes from.
    pub source: ConfigSource,
}

impl EffectiveConfig {
    /// URL and a usable key are both present.
    pub fn is_connected(&self) -> bool {
        !self.base_url.is_empty() && !self.management_key.is_empty()
    }

    /// The `config` member of `/usage-service/config` responses. The CPA Management Key
    /// is never returned: only whether one is set and its masked form.
    pub fn to_response(&self) -> Value {
        let mut collector = json!({
            "enabled": self.collector.enabled,
            "collectorMode": self.collector.mode.as_str(),
            "queue": self.collector.queue,
            "popSide": self.collector.pop_side.as_str(),
            "batchSize": self.collector.batch_size,
            "pollIntervalMs": self.collector.poll_interval_ms,
            "queryLimit": self.collector.query_limit,
        });
        if self.collector.tls_skip_verify {
            collector["tlsSkipVerify"] = json!(true);
        }
        let mut connection = json!({
            "cpaBaseUrl": self.base_url,
            "managementKeySet": !self.management_key.is_empty(),
        });
        if !self.management_key.is_empty() {
            connection["managementKey"] = json!(self.management_key.masked());
        }
        if self.key_unreadable.is_some() {
            connection["managementKeyNeedsReentry"] = json!(true);
        }
        let mut config = json!({
            "cpaConnection": connection,
            "collector": collector,
            "codexInspection": InspectionConfig::from_stored(&self.codex_inspection).to_json(),
            "externalUsageService": {"enabled": false},
        });
        if let Some(updated) = self.updated_at_ms {
            config["updatedAtMs"] = json!(updated);
        }
        config
    }
}

/// Startup defaults for the collector fields (§1.3), before anything saved is applied.
pub fn startup_collector<S: Store>(state: &AppState<S>) -> CollectorValues {
    let startup = &state.startup;
    CollectorValues {
        enabled: true,
        mode: startup.collector_mode,
        queue: startup.queue.clone(),
        pop_side: startup.pop_side,
        batch_size: startup.batch_size,
        poll_interval_ms: startup.poll_interval_ms,
        query_limit: startup.query_limit,
        tls_skip_verify: startup.tls_skip_verify,
    }
}

/// Reads and parses a settings document; an unreadable document is an internal error
/// that names the settings key (nothing is overwritten).
async fn read_doc<S: Store, T: serde::de::DeserializeOwned>(
    state: &AppState<S>,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match state.store.get_setting(key).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|error| {
            ApiError::internal(&format!("settings document {key} is unreadable"), &error)
        }),
    }
}

/// The saved manager config as stored, or `None` when nothing is saved.
pub async fn read_stored<S: Store>(state: &AppState<S>) -> Result<Option<StoredConfig>, ApiError> {
    read_doc(state, MANAGER_CONFIG_KEY).await
}

/// The configuration in effect (server-core §3.6).
pub async fn load<S: Store>(state: &AppState<S>) -> Result<EffectiveConfig, ApiError> {
    let mut effective = EffectiveConfig {
        base_url: String::new(),
        management_key: Secret::default(),
        key_unreadable: None,
        collector: startup_collector(state),
        codex_inspection: Value::Null,
        updated_at_ms: None,
        source: ConfigSource::None,
    };
    if let Some(stored) = read_stored(state).await? {
        effective.source = ConfigSource::Db;
        effective.base_url =
            crate::connection::normalize_base_url(&stored.cpa_connection.cpa_base_url);
        open_into(
            state,
            MANAGER_KEY_FIELD,
            &stored.cpa_connection.management_key,
            &mut effective,
        );
        let collector = &stored.collector;
        let values = &mut effective.collector;
        if let Some(enabled) = collector.enabled {
            values.enabled = enabled;
        }
        if let Some(mode) = collector
            .collector_mode
            .as_deref()
            .filter(|mode| !mode.is_empty())
        {
            values.mode = Mode::parse(mode);
        }
        if let Some(queue) = collector.queue.as_deref().filter(|queue| !queue.is_empty()) {
            values.queue = queue.to_string();
        }
        if let Some(side) = collector
            .pop_side
            .as_deref()
            .filter(|side| !side.is_empty())
        {
            values.pop_side = PopSide::parse(side);
        }
        if let Some(size) = collector
            .batch_size
            .and_then(|size| u32::try_from(size).ok())
            .filter(|size| *size > 0)
        {
            values.batch_size = size;
        }
        if let Some(poll) = collector
            .poll_interval_ms
            .and_then(|poll| u64::try_from(poll).ok())
            .filter(|poll| *poll > 0)
        {
            values.poll_interval_ms = poll;
        }
        if let Some(limit) = collector.query_limit.filter(|limit| *limit > 0) {
            values.query_limit = limit;
        }
        values.tls_skip_verify = collector.tls_skip_verify.unwrap_or(false);
        effective.codex_inspection = stored.codex_inspection.clone();
        effective.updated_at_ms = stored.updated_at_ms;
    }
    if effective.base_url.is_empty()
        && effective.management_key.is_empty()
        && effective.key_unreadable.is_none()
        && let Some(setup) = read_doc::<S, StoredSetup>(state, SETUP_KEY).await?
        && !setup.cpa_base_url.trim().is_empty()
    {
        effective.source = ConfigSource::Db;
        effective.base_url = crate::connection::normalize_base_url(&setup.cpa_base_url);
        open_into(
            state,
            SETUP_KEY_FIELD,
            &setup.management_key,
            &mut effective,
        );
        if !setup.queue.is_empty() {
            effective.collector.queue = setup.queue.clone();
        }
        if !setup.pop_side.is_empty() {
            effective.collector.pop_side = PopSide::parse(&setup.pop_side);
        }
    }
    if let Some(env) = &state.startup.env_connection {
        // The env-managed connection wins for every connection and collector field;
        // only the monitoring switch, queryLimit and codex inspection stay from the database.
        let enabled = effective.collector.enabled;
        let query_limit = effective.collector.query_limit;
        effective.collector = startup_collector(state);
        effective.collector.enabled = enabled;
        effective.collector.query_limit = query_limit;
        effective.base_url = env.base_url.clone();
        effective.management_key = env.management_key.clone();
        effective.key_unreadable = None;
        effective.source = ConfigSource::Env;
    }
    Ok(effective)
}

fn open_into<S: Store>(
    state: &AppState<S>,
    field: &str,
    stored: &str,
    effective: &mut EffectiveConfig,
) {
    match state.data_key.open(field, stored) {
        Ok(key) => {
            effective.management_key = Secret::new(key.trim());
            effective.key_unreadable = None;
        }
        Err(error) => {
            effective.management_key = Secret::default();
            effective.key_unreadable = Some(error);
        }
    }
}

/// What a save changes. `connection` is `None` to keep the saved connection as it is
/// (used in env-managed mode, where the env key must never reach SQLite).
#[derive(Debug, Clone)]
pub struct Update {
    /// The new CPA URL and management key; `None` keeps the saved ones.
    pub connection: Option<(String, Secret)>,
    /// New collector settings; `None` keeps the saved ones.
    pub collector: Option<CollectorValues>,
    /// Only `queryLimit` (editable even when env-managed).
    pub query_limit: Option<i64>,
    /// Only the monitoring switch.
    pub enabled: Option<bool>,
    /// New inspection settings; `None` keeps the saved ones.
    pub codex_inspection: Option<Value>,
}

/// Writes the manager config (and the legacy `setup` row when the connection changes).
pub async fn save<S: Store>(
    state: &AppState<S>,
    update: Update,
    now_ms: i64,
) -> Result<(), ApiError> {
    let mut stored = read_stored(state).await?.unwrap_or_default();
    if let Some((base_url, key)) = &update.connection {
        let sealed = state.data_key.seal(MANAGER_KEY_FIELD, key.expose());
        stored.cpa_connection = StoredConnection {
            cpa_base_url: base_url.clone(),
            management_key: sealed,
        };
    }
    if let Some(values) = &update.collector {
        stored.collector = StoredCollector {
            enabled: Some(values.enabled),
            collector_mode: Some(values.mode.as_str().to_string()),
            queue: Some(values.queue.clone()),
            pop_side: Some(values.pop_side.as_str().to_string()),
            batch_size: Some(i64::from(values.batch_size)),
            poll_interval_ms: i64::try_from(values.poll_interval_ms).ok(),
            query_limit: Some(values.query_limit),
            tls_skip_verify: values.tls_skip_verify.then_some(true),
        };
    }
    if let Some(limit) = update.query_limit {
        stored.collector.query_limit = Some(limit);
    }
    if let Some(enabled) = update.enabled {
        stored.collector.enabled = Some(enabled);
    }
    if let Some(codex) = update.codex_inspection {
        stored.codex_inspection = codex;
    }
    stored.other.remove("externalUsageService");
    stored.other.insert(
        "externalUsageService".to_string(),
        json!({"enabled": false}),
    );
    stored.updated_at_ms = Some(now_ms);
    let text = serde_json::to_string(&stored)
        .map_err(|error| ApiError::internal("encode manager config", &error))?;
    state.store.put_setting(MANAGER_CONFIG_KEY, &text).await?;
    if let Some((base_url, key)) = &update.connection {
        let values = update
            .collector
            .clone()
            .unwrap_or_else(|| startup_collector(state));
        let setup = StoredSetup {
            cpa_base_url: base_url.clone(),
            management_key: state.data_key.seal(SETUP_KEY_FIELD, key.expose()),
            queue: values.queue.clone(),
            pop_side: values.pop_side.as_str().to_string(),
        };
        let text = serde_json::to_string(&setup)
            .map_err(|error| ApiError::internal("encode setup", &error))?;
        state.store.put_setting(SETUP_KEY, &text).await?;
    }
    Ok(())
}
