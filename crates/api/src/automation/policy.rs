//! The account processing policy (automation spec §4.2): three switches, each from the
//! environment (which locks it), else a saved override, else the config file or default.
//!
//! | Field | Environment | Config file | Default |
//! |---|---|---|---|
//! | `codexQuotaCooldown` | `USAGE_QUOTA_COOLDOWN_ENABLED` | `quotaCooldownEnabled` | off |
//! | `authIssueQueue` | `USAGE_ACCOUNT_ACTIONS_ENABLED` | `accountActionsEnabled` | off |
//! | `authIssueAutoDisable` | `USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE` | `accountActionsAutoDisable` | off |
//!
//! Auto-disable only acts while the queue is on. Overrides are saved in settings
//! `automation_settings_v1` (the Go server's key and shape). The switches in effect are
//! kept in memory for the ingest path, which reads them per event.

use std::sync::atomic::{AtomicBool, Ordering};

use cpamp_domain::ports::SettingsStore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, ErrorCode};
use crate::state::{AutomationStartup, StartupSwitch};

/// Settings key of the saved overrides.
pub const SETTINGS_KEY: &str = "automation_settings_v1";

/// The saved overrides (absent fields are not overridden).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    /// `codexQuotaCooldownEnabled`: disable a Codex credential that hit its quota until it resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codex_quota_cooldown_enabled: Option<bool>,
    /// `authIssueQueueEnabled`: the account action queue collects credentials with auth
    /// problems (the Issues page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_issue_queue_enabled: Option<bool>,
    /// `authIssueAutoDisableEnabled`: disable queued credentials automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_issue_auto_disable_enabled: Option<bool>,
    /// `updatedAtMs`: Unix ms of the last save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<i64>,
}

/// The switches in effect, readable without waiting.
#[derive(Debug, Default)]
pub struct Switches {
    quota_cooldown: AtomicBool,
    queue: AtomicBool,
    auto_disable: AtomicBool,
}

impl Switches {
    /// Quota cooldowns act.
    pub fn quota_cooldown(&self) -> bool {
        self.quota_cooldown.load(Ordering::Relaxed)
    }

    /// The account action queue takes failures.
    pub fn queue(&self) -> bool {
        self.queue.load(Ordering::Relaxed)
    }

    /// Auto-disable acts: switched on and the queue on.
    pub fn auto_disable(&self) -> bool {
        self.queue() && self.auto_disable.load(Ordering::Relaxed)
    }

    /// Takes the switches of a freshly resolved policy.
    pub fn apply(&self, view: &PolicyView) {
        self.quota_cooldown
            .store(view.quota_cooldown.configured, Ordering::Relaxed);
        self.queue.store(view.queue.configured, Ordering::Relaxed);
        self.auto_disable
            .store(view.auto_disable.configured, Ordering::Relaxed);
    }
}

/// Where a switch's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The built-in default or the config file.
    Startup,
    /// An environment variable (locked against changes through the API).
    Env,
    /// Saved through the API.
    Database,
}

impl Source {
    /// The source as the endpoint names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Startup => "startup",
            Source::Env => "env",
            Source::Database => "database",
        }
    }
}

/// One switch resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Whether the switch is on.
    pub configured: bool,
    /// Where the value comes from.
    pub source: Source,
    /// The environment variable that sets it.
    pub env_key: &'static str,
    /// The config-file key that sets it.
    pub config_file_key: &'static str,
}

/// The whole policy as the endpoint reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyView {
    /// Quota cooldowns.
    pub quota_cooldown: Capability,
    /// The account action queue.
    pub queue: Capability,
    /// Automatic disabling of queued credentials (acts only with the queue on).
    pub auto_disable: Capability,
    /// Unix ms of the last save through the API.
    pub updated_at_ms: Option<i64>,
}

fn capability(
    startup: StartupSwitch,
    saved: Option<bool>,
    env_key: &'static str,
    config_file_key: &'static str,
) -> Capability {
    let (configured, source) = if startup.from_env {
        (startup.value, Source::Env)
    } else if let Some(saved) = saved {
        (saved, Source::Database)
    } else {
        (startup.value, Source::Startup)
    };
    Capability {
        configured,
        source,
        env_key,
        config_file_key,
    }
}

/// Resolves the policy from startup values and saved overrides.
pub fn resolve(startup: &AutomationStartup, saved: &Overrides) -> PolicyView {
    PolicyView {
        quota_cooldown: capability(
            startup.quota_cooldown,
            saved.codex_quota_cooldown_enabled,
            "USAGE_QUOTA_COOLDOWN_ENABLED",
            "quotaCooldownEnabled",
        ),
        queue: capability(
            startup.account_actions,
            saved.auth_issue_queue_enabled,
            "USAGE_ACCOUNT_ACTIONS_ENABLED",
            "accountActionsEnabled",
        ),
        auto_disable: capability(
            startup.auto_disable,
            saved.auth_issue_auto_disable_enabled,
            "USAGE_ACCOUNT_ACTIONS_AUTO_DISABLE",
            "accountActionsAutoDisable",
        ),
        updated_at_ms: saved.updated_at_ms,
    }
}

impl PolicyView {
    /// The policy as `GET` answers it.
    pub fn to_json(&self) -> Value {
        let field = |capability: &Capability, enabled: bool, depends_on: Option<&str>| {
            let mut value = json!({
                "enabled": enabled,
                "configured": capability.configured,
                "source": capability.source.as_str(),
                "locked": capability.source == Source::Env,
                "envKey": capability.env_key,
                "configFileKey": capability.config_file_key,
            });
            if let (Some(depends_on), Some(object)) = (depends_on, value.as_object_mut()) {
                object.insert("dependsOn".into(), Value::String(depends_on.to_string()));
            }
            value
        };
        let sources = [
            self.quota_cooldown.source,
            self.queue.source,
            self.auto_disable.source,
        ];
        let source = if sources.contains(&Source::Database) {
            Source::Database
        } else if sources.contains(&Source::Env) {
            Source::Env
        } else {
            Source::Startup
        };
        let mut body = json!({
            "source": source.as_str(),
            "codexQuotaCooldown": field(&self.quota_cooldown, self.quota_cooldown.configured, None),
            "authIssueQueue": field(&self.queue, self.queue.configured, None),
            "authIssueAutoDisable": field(
                &self.auto_disable,
                self.queue.configured && self.auto_disable.configured,
                Some("authIssueQueue"),
            ),
        });
        if let (Some(at), Some(object)) = (self.updated_at_ms, body.as_object_mut()) {
            object.insert("updatedAtMs".into(), Value::from(at));
        }
        body
    }
}

/// The saved overrides; unreadable JSON counts as none (and is replaced on the next save).
pub async fn load_overrides<S: SettingsStore>(store: &S) -> Result<Overrides, ApiError> {
    let saved = store.get_setting(SETTINGS_KEY).await?;
    Ok(saved
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default())
}

/// A PATCH body: each field `true`/`false`, or absent/`null` for "unchanged".
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patch {
    /// New `codexQuotaCooldownEnabled`.
    #[serde(default)]
    pub codex_quota_cooldown_enabled: Option<bool>,
    /// New `authIssueQueueEnabled`.
    #[serde(default)]
    pub auth_issue_queue_enabled: Option<bool>,
    /// New `authIssueAutoDisableEnabled`.
    #[serde(default)]
    pub auth_issue_auto_disable_enabled: Option<bool>,
}

/// Applies a PATCH: a field locked by its environment variable is refused (409, nothing
/// saved), the rest merged into the overrides.
pub fn merge(
    startup: &AutomationStartup,
    mut saved: Overrides,
    patch: &Patch,
    now_ms: i64,
) -> Result<Overrides, ApiError> {
    for (value, switch, key) in [
        (
            patch.codex_quota_cooldown_enabled,
            startup.quota_cooldown,
            "quotaCooldownEnabled",
        ),
        (
            patch.auth_issue_queue_enabled,
            startup.account_actions,
            "accountActionsEnabled",
        ),
        (
            patch.auth_issue_auto_disable_enabled,
            startup.auto_disable,
            "accountActionsAutoDisable",
        ),
    ] {
        if value.is_some() && switch.from_env {
            return Err(ApiError::new(
                actix_web::http::StatusCode::CONFLICT,
                ErrorCode::AccountProcessingPolicyEnvLocked,
                format!("{key} is locked by environment variable"),
            ));
        }
    }
    if let Some(value) = patch.codex_quota_cooldown_enabled {
        saved.codex_quota_cooldown_enabled = Some(value);
    }
    if let Some(value) = patch.auth_issue_queue_enabled {
        saved.auth_issue_queue_enabled = Some(value);
    }
    if let Some(value) = patch.auth_issue_auto_disable_enabled {
        saved.auth_issue_auto_disable_enabled = Some(value);
    }
    saved.updated_at_ms = Some(now_ms);
    Ok(saved)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn startup(cooldown: StartupSwitch) -> AutomationStartup {
        AutomationStartup {
            quota_cooldown: cooldown,
            ..AutomationStartup::default()
        }
    }

    #[test]
    fn environment_wins_and_locks() {
        let env_on = StartupSwitch {
            value: true,
            from_env: true,
        };
        let saved = Overrides {
            codex_quota_cooldown_enabled: Some(false),
            auth_issue_auto_disable_enabled: Some(true),
            ..Overrides::default()
        };
        let view = resolve(&startup(env_on), &saved);
        let body = view.to_json();
        assert_eq!(body["codexQuotaCooldown"]["enabled"], true);
        assert_eq!(body["codexQuotaCooldown"]["locked"], true);
        assert_eq!(body["codexQuotaCooldown"]["source"], "env");
        assert_eq!(body["authIssueAutoDisable"]["configured"], true);
        assert_eq!(
            body["authIssueAutoDisable"]["enabled"], false,
            "the queue is off"
        );
        assert_eq!(body["authIssueAutoDisable"]["dependsOn"], "authIssueQueue");
        assert_eq!(body["source"], "database");

        let patch = Patch {
            codex_quota_cooldown_enabled: Some(true),
            ..Patch::default()
        };
        let error = merge(&startup(env_on), saved.clone(), &patch, 1).unwrap_err();
        assert_eq!(error.code, ErrorCode::AccountProcessingPolicyEnvLocked);
        assert_eq!(
            error.message,
            "quotaCooldownEnabled is locked by environment variable"
        );

        let patch = Patch {
            auth_issue_queue_enabled: Some(true),
            ..Patch::default()
        };
        let merged = merge(&startup(env_on), saved, &patch, 7).unwrap();
        assert_eq!(merged.auth_issue_queue_enabled, Some(true));
        assert_eq!(merged.codex_quota_cooldown_enabled, Some(false), "kept");
        assert_eq!(merged.updated_at_ms, Some(7));
    }

    #[test]
    fn defaults_are_off() {
        let body = resolve(&AutomationStartup::default(), &Overrides::default()).to_json();
        for field in [
            "codexQuotaCooldown",
            "authIssueQueue",
            "authIssueAutoDisable",
        ] {
            assert_eq!(body[field]["enabled"], false, "{field}");
            assert_eq!(body[field]["source"], "startup", "{field}");
        }
        assert_eq!(body["source"], "startup");
        assert!(body.get("updatedAtMs").is_none());
    }
}
