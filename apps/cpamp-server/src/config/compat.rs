//! Compatibility with the configuration of the Go server (CPA Manager Plus): every
//! environment variable and config-file key it read is either applied by
//! [`super::load`] or listed in [`NOT_APPLIED`], which turns its presence into a start-up
//! warning that names it and what to use in cpamp instead.
//!
//! The unit tests below hold the Go server's full list, so a name can be neither
//! forgotten nor both applied and listed here.

/// A setting of the Go server that cpamp accepts but does not apply.
#[derive(Debug, Clone, Copy)]
pub struct NotApplied {
    /// The environment variable.
    pub env: &'static str,
    /// The config-file key, if the Go server had one.
    pub key: Option<&'static str>,
    /// Why nothing is applied and what to use instead.
    pub instead: &'static str,
}

/// Go settings that cpamp accepts without applying them. Starting with one of them set
/// logs a warning instead of failing, so a deployment that worked keeps starting.
pub const NOT_APPLIED: &[NotApplied] = &[
    NotApplied {
        env: "CPA_MANAGER_PPROF_ADDR",
        key: Some("pprofAddr"),
        instead: "cpamp has no Go pprof profiler and opens no port for it; use GET /metrics \
                  (Prometheus) for counters and RUST_LOG=debug for detail",
    },
    NotApplied {
        env: "USAGE_DASHBOARD_HOURLY_ROLLUP_ENABLED",
        key: None,
        instead: "cpamp writes its hour and day rollups in the same transaction as every stored \
                  batch, so they are always current and there is no worker to switch off",
    },
];

/// Warnings for the [`NOT_APPLIED`] settings that are present, from the environment
/// (`env_value`) or the config file (`file_has_key`).
pub fn not_applied_warnings(
    env_value: impl Fn(&str) -> Option<String>,
    file_has_key: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for setting in NOT_APPLIED {
        let from_env = env_value(setting.env).map(|value| format!("{}={value:?}", setting.env));
        let from_file = setting
            .key
            .filter(|key| file_has_key(key))
            .map(|key| format!("config key {key}"));
        if let Some(source) = from_env.or(from_file) {
            warnings.push(format!(
                "{source} is accepted but not applied: {}",
                setting.instead
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every environment variable the Go server read (its `config.Load`).
    const GO_ENV: &[&str] = &[
        "CPA_MANAGER_CONFIG",
        "HTTP_ADDR",
        "USAGE_DATA_DIR",
        "USAGE_DB_PATH",
        "CPA_UPSTREAM_URL",
        "CPA_MANAGEMENT_KEY",
        "CPA_MANAGEMENT_KEY_FILE",
        "CPA_MANAGER_ADMIN_KEY",
        "CPA_MANAGER_ADMIN_KEY_FILE",
        "CPA_MANAGER_DATA_KEY",
        "CPA_MANAGER_DATA_KEY_FILE",
        "CPA_MANAGER_DATA_KEY_PATH",
        "USAGE_COLLECTOR_MODE",
        "USAGE_RESP_QUEUE",
        "USAGE_RESP_POP_SIDE",
        "USAGE_BATCH_SIZE",
        "USAGE_POLL_INTERVAL_MS",
        "USAGE_QUERY_LIMIT",
        "CPA_MANAGER_PPROF_ADDR",
        "PANEL_PATH",
        "USAGE_CORS_ORIGINS",
        "USAGE_RESP_TLS_SKIP_VERIFY",
        "USAGE_QUOTA_COOLDOWN_ENABLED",
        "USAGE_ACCOUNT_ACTIONS_ENABLED",
        "USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE",
        "USAGE_DASHBOARD_HOURLY_ROLLUP_ENABLED",
        "USAGE_IMPORT_CHUNK_BYTES",
        "USAGE_IMPORT_DISK_QUOTA_BYTES",
        "USAGE_IMPORT_MAX_SESSIONS",
        "USAGE_IMPORT_SESSION_TTL_MINUTES",
    ];

    /// Every key of the Go server's `config.json`.
    const GO_KEYS: &[&str] = &[
        "httpAddr",
        "dataDir",
        "dbPath",
        "cpaUpstreamUrl",
        "managementKeyFile",
        "adminKeyFile",
        "dataKeyFile",
        "dataKeyPath",
        "collectorMode",
        "queue",
        "popSide",
        "batchSize",
        "pollIntervalMs",
        "queryLimit",
        "pprofAddr",
        "panelPath",
        "corsOrigins",
        "tlsSkipVerify",
        "quotaCooldownEnabled",
        "accountActionsEnabled",
        "accountActionsAutoDisable",
        "usageImportChunkBytes",
        "usageImportDiskQuotaBytes",
        "usageImportMaxSessions",
        "usageImportSessionTTLMinutes",
    ];

    /// The variables `config::load` reads: every `"NAME"` literal in config.rs.
    fn read_by_load() -> Vec<String> {
        let source = include_str!("../config.rs");
        let source = source.split("#[cfg(test)]").next().unwrap_or(source);
        source
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|literal| {
                literal.len() > 3
                    && literal.contains('_')
                    && literal.bytes().all(|byte| {
                        byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_'
                    })
            })
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_go_variable_is_applied_or_listed_and_never_both() {
        let read = read_by_load();
        for name in GO_ENV {
            let applied = read.iter().any(|literal| literal == name);
            let listed = NOT_APPLIED.iter().any(|setting| setting.env == *name);
            assert!(
                applied || listed,
                "{name}: read it in config::load or list it in compat::NOT_APPLIED"
            );
            assert!(
                !(applied && listed),
                "{name} is read by config::load: remove it from compat::NOT_APPLIED"
            );
        }
    }

    #[test]
    fn every_go_config_key_is_applied_or_listed_and_never_both() {
        let known = super::super::known_file_keys();
        for key in GO_KEYS {
            let applied = known.iter().any(|known| known == key);
            let listed = NOT_APPLIED.iter().any(|setting| setting.key == Some(*key));
            assert!(
                applied || listed,
                "config key {key}: add it to config::RawFile or list it in compat::NOT_APPLIED"
            );
            assert!(
                !(applied && listed),
                "config key {key} is in config::RawFile: remove it from compat::NOT_APPLIED"
            );
        }
    }

    #[test]
    fn present_settings_warn_with_their_name_and_what_to_use() {
        let warnings = not_applied_warnings(
            |name| (name == "CPA_MANAGER_PPROF_ADDR").then(|| "127.0.0.1:6060".to_string()),
            |_| false,
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "CPA_MANAGER_PPROF_ADDR=\"127.0.0.1:6060\" is accepted but not applied"
            )
        );
        assert!(warnings[0].contains("/metrics"));
        let warnings = not_applied_warnings(|_| None, |key| key == "pprofAddr");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("config key pprofAddr is accepted but not applied"));
        assert!(not_applied_warnings(|_| None, |_| false).is_empty());
    }
}
