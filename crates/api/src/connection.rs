//! The CPA connection in effect: which CPA this server talks to and with which
//! CPA Management Key.
//!
//! Order (server-core §3.6 `ResolveSetup`): the env-managed connection, else the saved
//! manager config with URL and key, else the legacy `setup` row. Callers that need CPA
//! answer `ApiError::not_configured()` (428) when [`resolve`] gives `None`. A saved key
//! that the current data key cannot open also gives `None`: the connection has to be
//! saved again (see [`Resolution::NeedsReentry`]).

use cpamp_collector::{CollectorSettings, ManagementKey};
use cpamp_domain::Secret;
use cpamp_domain::crypto::SealError;

use crate::error::ApiError;
use crate::manager_config::{self, ConfigSource, EffectiveConfig};
use crate::state::{AppState, Store};

/// Where a connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionSource {
    /// `CPA_UPSTREAM_URL` + `CPA_MANAGEMENT_KEY(_FILE)`; never written to SQLite.
    Env,
    /// Saved through setup or the config page (stored sealed in SQLite).
    Db,
}

impl ConnectionSource {
    /// The source as `/usage-service/info` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionSource::Env => "env",
            ConnectionSource::Db => "db",
        }
    }
}

/// A usable CPA connection.
#[derive(Debug, Clone)]
pub struct CpaConnection {
    /// Normalised base URL (no trailing `/`, no `/v0/management`).
    pub base_url: String,
    /// CPA's management key.
    pub management_key: Secret,
    /// Where the connection comes from.
    pub source: ConnectionSource,
}

/// The connection state in detail.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// A usable connection.
    Configured(CpaConnection),
    /// A connection is saved but its key cannot be opened with the current data key.
    NeedsReentry {
        /// The saved CPA URL.
        base_url: String,
        /// Why the saved key cannot be opened.
        reason: SealError,
    },
    /// Nothing saved and no connection in the environment.
    NotConfigured,
}

/// The connection in effect; `None` when setup is not complete.
pub async fn resolve<S: Store>(state: &AppState<S>) -> Result<Option<CpaConnection>, ApiError> {
    Ok(match resolve_detail(state).await? {
        Resolution::Configured(connection) => Some(connection),
        Resolution::NeedsReentry { .. } | Resolution::NotConfigured => None,
    })
}

/// The connection state, including why a saved connection cannot be used.
pub async fn resolve_detail<S: Store>(state: &AppState<S>) -> Result<Resolution, ApiError> {
    let effective = manager_config::load(state).await?;
    Ok(resolution_of(&effective))
}

/// The connection state of an already loaded configuration.
pub fn resolution_of(effective: &EffectiveConfig) -> Resolution {
    if effective.is_connected() {
        return Resolution::Configured(CpaConnection {
            base_url: effective.base_url.clone(),
            management_key: effective.management_key.clone(),
            source: if effective.source == ConfigSource::Env {
                ConnectionSource::Env
            } else {
                ConnectionSource::Db
            },
        });
    }
    match &effective.key_unreadable {
        Some(reason) => Resolution::NeedsReentry {
            base_url: effective.base_url.clone(),
            reason: reason.clone(),
        },
        None => Resolution::NotConfigured,
    }
}

/// The collector run for a configuration, or `None` when it should not run: no usable
/// connection, or request monitoring switched off (the env-managed connection always
/// runs, as in the Go server).
pub fn collector_settings(effective: &EffectiveConfig) -> Option<CollectorSettings> {
    if !effective.is_connected() {
        return None;
    }
    if !effective.collector.enabled && effective.source != ConfigSource::Env {
        return None;
    }
    let values = &effective.collector;
    let mut settings = CollectorSettings::new(
        effective.base_url.clone(),
        ManagementKey::new(effective.management_key.expose()),
    );
    settings.mode = values.mode;
    settings.queue = values.queue.clone();
    settings.pop_side = values.pop_side;
    settings.batch_size = values.batch_size.max(1);
    settings.poll_interval = std::time::Duration::from_millis(values.poll_interval_ms.max(1));
    settings.tls_skip_verify = values.tls_skip_verify;
    Some(settings)
}

/// Starts, restarts or stops the collector to match the configuration in effect. Called
/// at boot and after every successful setup or config save.
pub async fn apply_collector<S: Store>(state: &AppState<S>) -> Result<(), ApiError> {
    let effective = manager_config::load(state).await?;
    match collector_settings(&effective) {
        Some(mut settings) => {
            settings.shutdown_grace = state.startup.shutdown_grace;
            // The first auth-file listing of this connection is fetched before the first
            // pop, so the first events are labelled too.
            if let Resolution::Configured(connection) = resolution_of(&effective) {
                state
                    .automation
                    .collector_connection(Some(&connection))
                    .await;
            }
            tracing::info!(
                upstream = %settings.upstream,
                mode = settings.mode.as_str(),
                source = effective.source.as_str(),
                "starting usage collector"
            );
            state.collector.restart(settings).await;
        }
        None => {
            if let Some(reason) = &effective.key_unreadable {
                tracing::warn!(
                    "the saved CPA Management Key cannot be used ({reason}); the collector stays stopped. \
                     If data.key was lost or replaced, open /management.html and save the CPA connection again"
                );
            }
            state.collector.stop().await;
            state.automation.collector_connection(None).await;
        }
    }
    Ok(())
}

/// CPA base URL normalisation (server-core §3.7): trim, add `http://` when there is no
/// scheme, drop trailing `/`, then one `/v0/management` and one `/v0` suffix.
pub fn normalize_base_url(raw: &str) -> String {
    let mut url = raw.trim().to_string();
    if url.is_empty() {
        return url;
    }
    if !url.contains("://") {
        url = format!("http://{url}");
    }
    let mut url = url.trim_end_matches('/').to_string();
    if let Some(stripped) = url.strip_suffix("/v0/management") {
        url = stripped.to_string();
    }
    if let Some(stripped) = url.strip_suffix("/v0") {
        url = stripped.to_string();
    }
    url
}

#[cfg(test)]
mod tests {
    use super::normalize_base_url;

    #[test]
    fn base_urls_are_normalised_like_the_go_server() {
        assert_eq!(
            normalize_base_url("cpa:8317/v0/management/"),
            "http://cpa:8317"
        );
        assert_eq!(normalize_base_url("https://h/cpa/v0/"), "https://h/cpa");
        assert_eq!(normalize_base_url("http://h/cpa"), "http://h/cpa");
        assert_eq!(normalize_base_url("  "), "");
        assert_eq!(normalize_base_url("http://h:1//"), "http://h:1");
    }
}
