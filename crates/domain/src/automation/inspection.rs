//! Server inspection rules (automation spec §5): its configuration, how a Codex usage
//! probe becomes a suggested action, the quota windows it reports, and how xAI billing
//! answers are classified.
//!
//! Reasons are stable codes with an English sentence (the Go server wrote fixed Chinese
//! sentences); the panel shows the sentence as it is.

use serde_json::{Map, Value, json};

use super::authfile::normalize_provider;
use super::credential_policy::{FailureSignal, evaluate};
use super::quota::{Observation, WindowInput};
use super::runs::RunResult;
use crate::analytics::accounts::AccountTarget;

/// `config.codexInspection` of `/usage-service/config`, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectionConfig {
    /// Scheduled runs are on (`enabled`); manual runs work either way.
    pub enabled: bool,
    /// `interval` or `time_points`.
    pub schedule_mode: String,
    /// Local times of day (`HH:MM`, sorted, distinct) at which a `time_points` schedule
    /// runs, in [`time_zone`](Self::time_zone) (`schedule.timePoints`).
    pub time_points: Vec<String>,
    /// Minutes between scheduled runs in `interval` mode (`schedule.intervalMinutes`,
    /// default 60).
    pub interval_minutes: i64,
    /// IANA zone; empty means the server's local zone.
    pub time_zone: String,
    /// Subset of `codex`, `xai`, in that order.
    pub target_types: Vec<String>,
    /// Probes run at once (`workers`, default 4).
    pub workers: i64,
    /// Deletes run at once when a run's actions are executed (`deleteWorkers`, default 4).
    pub delete_workers: i64,
    /// Per probe call, ms.
    pub timeout_ms: i64,
    /// Extra attempts of a probe call after a transport error (`retries`, default 0).
    pub retries: i64,
    /// `User-Agent` of the Codex usage probe (`userAgent`).
    pub user_agent: String,
    /// xAI credentials also get a small inference request; without it xAI results are
    /// never `enable`, so xAI auto-recovery needs it (`xaiInferenceEnabled`).
    pub xai_inference_enabled: bool,
    /// Model of the xAI inference probe (`xaiInferenceModel`, default `grok-4.5`).
    pub xai_inference_model: String,
    /// Prompt of the xAI inference probe (`xaiInferencePrompt`).
    pub xai_inference_prompt: String,
    /// `User-Agent` of the xAI probes (`xaiInferenceUserAgent`).
    pub xai_inference_user_agent: String,
    /// Used percentage (0–100) of a quota window at which a Codex credential counts as
    /// exhausted and is suggested for `disable` (`usedPercentThreshold`, default 100).
    pub used_percent_threshold: f64,
    /// Credentials probed per provider, picked at random; 0 probes all (`sampleSize`).
    pub sample_size: i64,
    /// `none`, `enable`, `disable` or `delete`.
    pub auto_action_mode: String,
    /// At the end of a run, re-enable credentials that inspection itself disabled once
    /// their probe says `enable` (`autoRecoverEnabled`).
    pub auto_recover_enabled: bool,
}

impl Default for InspectionConfig {
    fn default() -> InspectionConfig {
        InspectionConfig {
            enabled: false,
            schedule_mode: "interval".into(),
            time_points: Vec::new(),
            interval_minutes: 60,
            time_zone: String::new(),
            target_types: vec!["codex".into()],
            workers: 4,
            delete_workers: 4,
            timeout_ms: 15_000,
            retries: 0,
            user_agent: "codex_cli_rs/0.76.0 (Debian 13.0.0; x86_64) WindowsTerminal".into(),
            xai_inference_enabled: false,
            xai_inference_model: "grok-4.5".into(),
            xai_inference_prompt: "Reply with exactly OK.".into(),
            xai_inference_user_agent: "xai-grok-workspace/0.2.101".into(),
            used_percent_threshold: 100.0,
            sample_size: 0,
            auto_action_mode: "none".into(),
            auto_recover_enabled: false,
        }
    }
}

/// Why a submitted configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `schedule.timeZone` is not an IANA zone the server knows: the submitted name and
    /// why it could not be loaded. The save is refused with 400.
    #[error("invalid time zone {0:?}: {1}")]
    TimeZone(String, String),
    /// `targetTypes` is empty or names something other than `codex` and `xai`; carries
    /// the submitted value.
    #[error("codexInspection.targetTypes must name codex and/or xai; got {0}")]
    TargetTypes(String),
}

fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_string)
}

/// `H:MM` or `HH:MM` as `HH:MM`.
fn time_point(text: &str) -> Option<String> {
    let (hours, minutes) = text.trim().split_once(':')?;
    let hours: u8 = hours.parse().ok().filter(|hours| *hours < 24)?;
    let minutes: u8 = minutes.parse().ok().filter(|minutes| *minutes < 60)?;
    Some(format!("{hours:02}:{minutes:02}"))
}

impl InspectionConfig {
    /// The saved value over the defaults (unknown or invalid members ignored).
    pub fn from_stored(saved: &Value) -> InspectionConfig {
        InspectionConfig::normalize(saved, &InspectionConfig::default())
            .unwrap_or_else(|_| InspectionConfig::default())
    }

    /// Applies a submitted object onto `previous` with the Go server's rules: several
    /// fields treat 0/false as explicit, so clients send the whole object.
    pub fn normalize(
        submitted: &Value,
        previous: &InspectionConfig,
    ) -> Result<InspectionConfig, ConfigError> {
        let mut config = previous.clone();
        let Some(object) = submitted.as_object() else {
            return Ok(config);
        };
        if let Some(enabled) = object.get("enabled").and_then(Value::as_bool) {
            config.enabled = enabled;
        }
        let schedule = object.get("schedule").and_then(Value::as_object);
        let empty = Map::new();
        let schedule = schedule.unwrap_or(&empty);
        if let Some(points) = schedule.get("timePoints").and_then(Value::as_array) {
            let mut points: Vec<String> = points
                .iter()
                .filter_map(Value::as_str)
                .filter_map(time_point)
                .collect();
            points.sort();
            points.dedup();
            config.time_points = points;
        }
        if let Some(minutes) =
            number(schedule.get("intervalMinutes")).filter(|minutes| *minutes > 0.0)
        {
            config.interval_minutes = minutes as i64;
        }
        let mode = text(schedule.get("mode")).map(|mode| mode.to_ascii_lowercase());
        config.schedule_mode = match mode.as_deref() {
            Some("time_points") if !config.time_points.is_empty() => "time_points".into(),
            Some("time_points") | Some("interval") => "interval".into(),
            _ if schedule.contains_key("mode") || previous.schedule_mode.is_empty() => {
                if !config.time_points.is_empty() {
                    "time_points".into()
                } else {
                    "interval".into()
                }
            }
            _ => config.schedule_mode.clone(),
        };
        if config.schedule_mode == "interval" && config.interval_minutes <= 0 {
            config.interval_minutes = 60;
        }
        if let Some(zone) = schedule.get("timeZone").and_then(Value::as_str) {
            let zone = zone.trim();
            if !zone.is_empty() {
                jiff::tz::TimeZone::get(zone)
                    .map_err(|error| ConfigError::TimeZone(zone.to_string(), error.to_string()))?;
            }
            config.time_zone = zone.to_string();
        }
        let types = match object.get("targetTypes") {
            Some(Value::Array(types)) => Some(types.clone()),
            _ => object
                .get("targetType")
                .and_then(Value::as_str)
                .map(|single| vec![Value::String(single.to_string())]),
        };
        if let Some(types) = types {
            let mut wanted = Vec::new();
            for item in &types {
                let name = item.as_str().unwrap_or("").trim().to_ascii_lowercase();
                match name.as_str() {
                    "codex" | "xai" => wanted.push(name),
                    _ => {
                        return Err(ConfigError::TargetTypes(
                            Value::Array(types.clone()).to_string(),
                        ));
                    }
                }
            }
            let ordered: Vec<String> = ["codex", "xai"]
                .iter()
                .filter(|name| wanted.iter().any(|wanted| wanted == *name))
                .map(|name| name.to_string())
                .collect();
            if ordered.is_empty() {
                return Err(ConfigError::TargetTypes("[]".into()));
            }
            config.target_types = ordered;
        }
        if let Some(workers) = number(object.get("workers")).filter(|workers| *workers > 0.0) {
            config.workers = (workers as i64).min(64);
        }
        match number(object.get("deleteWorkers")) {
            Some(workers) if workers > 0.0 => config.delete_workers = (workers as i64).min(64),
            _ if number(object.get("workers")).is_some_and(|workers| workers > 0.0) => {
                config.delete_workers = config.workers;
            }
            _ => {}
        }
        if let Some(timeout) = number(object.get("timeout")).filter(|timeout| *timeout > 0.0) {
            config.timeout_ms = timeout as i64;
        }
        if let Some(retries) = number(object.get("retries")).filter(|retries| *retries >= 0.0) {
            config.retries = (retries as i64).min(10);
        }
        if let Some(agent) = text(object.get("userAgent")) {
            config.user_agent = agent;
        }
        if let Some(flag) = object.get("xaiInferenceEnabled").and_then(Value::as_bool) {
            config.xai_inference_enabled = flag;
        }
        if let Some(model) = text(object.get("xaiInferenceModel")) {
            config.xai_inference_model = model;
        }
        if let Some(prompt) = text(object.get("xaiInferencePrompt")) {
            config.xai_inference_prompt = prompt;
        }
        if let Some(agent) = text(object.get("xaiInferenceUserAgent")) {
            config.xai_inference_user_agent = agent;
        }
        if let Some(threshold) = number(object.get("usedPercentThreshold")) {
            let threshold = if threshold > 0.0 && threshold <= 1.0 {
                threshold * 100.0
            } else {
                threshold
            };
            if threshold > 0.0 && threshold <= 100.0 {
                config.used_percent_threshold = threshold;
            }
        }
        if let Some(sample) = number(object.get("sampleSize")).filter(|sample| *sample >= 0.0) {
            config.sample_size = sample as i64;
        }
        if let Some(mode) = text(object.get("autoActionMode")).map(|mode| mode.to_ascii_lowercase())
            && matches!(mode.as_str(), "none" | "enable" | "disable" | "delete")
        {
            config.auto_action_mode = mode;
        }
        if let Some(flag) = object.get("autoRecoverEnabled").and_then(Value::as_bool) {
            config.auto_recover_enabled = flag;
        }
        Ok(config)
    }

    /// The configuration as `config.codexInspection` of `/usage-service/config` shows it
    /// (camelCase keys, `timeout` in ms, `targetType` the first target type).
    pub fn to_json(&self) -> Value {
        json!({
            "enabled": self.enabled,
            "schedule": {
                "mode": self.schedule_mode,
                "timePoints": self.time_points,
                "intervalMinutes": self.interval_minutes,
                "timeZone": self.time_zone,
            },
            "targetTypes": self.target_types,
            "targetType": self.target_types.first().cloned().unwrap_or_else(|| "codex".into()),
            "workers": self.workers,
            "deleteWorkers": self.delete_workers,
            "timeout": self.timeout_ms,
            "retries": self.retries,
            "userAgent": self.user_agent,
            "xaiInferenceUserAgent": self.xai_inference_user_agent,
            "xaiInferenceEnabled": self.xai_inference_enabled,
            "xaiInferenceModel": self.xai_inference_model,
            "xaiInferencePrompt": self.xai_inference_prompt,
            "usedPercentThreshold": self.used_percent_threshold,
            "sampleSize": self.sample_size,
            "autoActionMode": self.auto_action_mode,
            "autoRecoverEnabled": self.auto_recover_enabled,
        })
    }
}

/// The scheduled run due at `now_ms` for `config`, as its trigger key, if any:
/// `interval:<minutes>:<bucket>` once the interval passed since `last_scheduled_ms`, or
/// `YYYY-MM-DD HH:MM` when the current minute (in the schedule's zone) is a time point.
/// A schedule without a zone of its own uses `server_zone`, the zone the caller runs in;
/// this crate never reads the host's clock or zone itself.
pub fn scheduled_trigger(
    config: &InspectionConfig,
    now_ms: i64,
    last_scheduled_ms: Option<i64>,
    server_zone: &jiff::tz::TimeZone,
) -> Option<String> {
    if !config.enabled {
        return None;
    }
    if config.schedule_mode == "time_points" {
        let zone = if config.time_zone.is_empty() {
            server_zone.clone()
        } else {
            jiff::tz::TimeZone::get(&config.time_zone).ok()?
        };
        let now = jiff::Timestamp::from_millisecond(now_ms)
            .ok()?
            .to_zoned_datetime(zone);
        let minute = format!("{:02}:{:02}", now.hour(), now.minute());
        return config
            .time_points
            .contains(&minute)
            .then(|| format!("{} {minute}", now.date()));
    }
    let interval_ms = config.interval_minutes.max(1) * 60_000;
    if last_scheduled_ms.is_some_and(|last| now_ms - last < interval_ms) {
        return None;
    }
    Some(format!(
        "interval:{}:{}",
        config.interval_minutes,
        now_ms.div_euclid(interval_ms)
    ))
}

/// What an inspection suggests doing with an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the credential as it is.
    Keep,
    /// The login is no longer valid: the operator has to sign in again. Never executed
    /// automatically.
    Reauth,
    /// Disable the credential in CPA (quota exhausted or entitlement lost).
    Disable,
    /// Enable a disabled credential again (its quota is back).
    Enable,
    /// Delete the auth file (e.g. the workspace is deactivated).
    Delete,
}

impl Action {
    /// The wire name (`keep`, `reauth`, `disable`, `enable`, `delete`) of a result's
    /// `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Reauth => "reauth",
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Delete => "delete",
        }
    }

    /// Reads a wire name back; anything else is `None` (exact, lower-case).
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "keep" => Some(Action::Keep),
            "reauth" => Some(Action::Reauth),
            "disable" => Some(Action::Disable),
            "enable" => Some(Action::Enable),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// The verdict on one probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do with the credential (a result's `action`).
    pub action: Action,
    /// Stable reason code (`codex.quota_over_threshold` …).
    pub reason_code: &'static str,
    /// The reason in words, shown by the panel.
    pub reason: String,
    /// Used percentage (0–100) the verdict rests on; `None` when the probe reported none.
    pub used_percent: Option<f64>,
    /// The verdict is about quota rather than credentials (a result's `isQuota`).
    pub is_quota: bool,
}

/// One Codex rate-limit window of a usage answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Window {
    used_percent: Option<f64>,
    limit_window_seconds: Option<f64>,
    reset_after_seconds: Option<f64>,
    reset_at: Option<f64>,
}

fn window(value: Option<&Value>) -> Option<Window> {
    let object = value?.as_object()?;
    let read = |keys: &[&str]| keys.iter().find_map(|key| number(object.get(*key)));
    Some(Window {
        used_percent: read(&["used_percent", "usedPercent"]),
        limit_window_seconds: read(&["limit_window_seconds", "limitWindowSeconds"]),
        reset_after_seconds: read(&["reset_after_seconds", "resetAfterSeconds"]),
        reset_at: read(&["reset_at", "resetAt"]),
    })
}

const FIVE_HOURS: i64 = 18_000;
const WEEK: i64 = 604_800;
const MONTH: i64 = 2_592_000;

fn is_month(seconds: i64) -> bool {
    seconds == MONTH || (28 * 86_400..=31 * 86_400).contains(&seconds)
}

/// The windows of `rate_limit`, classified: (five hour, long window, long label).
fn classify(
    rate_limit: &Map<String, Value>,
    plan_type: &str,
) -> (Option<Window>, Option<(Window, &'static str)>) {
    let primary = window(
        rate_limit
            .get("primary_window")
            .or(rate_limit.get("primaryWindow")),
    );
    let secondary = window(
        rate_limit
            .get("secondary_window")
            .or(rate_limit.get("secondaryWindow")),
    );
    let team = plan_type.eq_ignore_ascii_case("team");
    let (mut five_hour, mut weekly, mut monthly, mut generic) = (None, None, None, None);
    for candidate in [primary, secondary].into_iter().flatten() {
        let Some(seconds) = candidate
            .limit_window_seconds
            .map(|seconds| seconds.round() as i64)
        else {
            continue;
        };
        if seconds == FIVE_HOURS && five_hour.is_none() {
            five_hour = Some(candidate);
        } else if seconds == WEEK && weekly.is_none() {
            weekly = Some(candidate);
        } else if is_month(seconds) && monthly.is_none() {
            monthly = Some(candidate);
        } else if seconds > FIVE_HOURS && generic.is_none() {
            generic = Some(candidate);
        }
    }
    if five_hour.is_none()
        && let Some(primary) = primary.filter(|primary| primary.limit_window_seconds.is_none())
    {
        five_hour = Some(primary);
    }
    if let Some(secondary) = secondary.filter(|secondary| secondary.limit_window_seconds.is_none())
    {
        if team && monthly.is_none() {
            monthly = Some(secondary);
        } else if !team && weekly.is_none() {
            weekly = Some(secondary);
        }
    }
    let long = weekly
        .map(|window| (window, "weekly"))
        .or(monthly.map(|window| (window, "monthly")))
        .or(generic.map(|window| (window, "long-window")));
    (five_hour, long)
}

fn max_used(rate_limit: &Map<String, Value>) -> Option<f64> {
    [
        window(
            rate_limit
                .get("primary_window")
                .or(rate_limit.get("primaryWindow")),
        ),
        window(
            rate_limit
                .get("secondary_window")
                .or(rate_limit.get("secondaryWindow")),
        ),
    ]
    .into_iter()
    .flatten()
    .filter_map(|window| window.used_percent)
    .reduce(f64::max)
}

fn unauthorized(body: &str, used_percent: Option<f64>) -> Decision {
    let decision = evaluate(&FailureSignal {
        provider: "codex".into(),
        status_code: 401,
        summary: body.into(),
        ..FailureSignal::default()
    });
    let (reason_code, reason) = match decision.map(|decision| decision.reason_code) {
        Some("invalid_credentials") => (
            "codex.login_expired",
            "401: the login expired; sign in again",
        ),
        Some("token_revoked") => (
            "codex.token_revoked",
            "401: the token was revoked; sign in again",
        ),
        _ => (
            "codex.unauthorized",
            "401: authentication failed; sign in again",
        ),
    };
    Decision {
        action: Action::Reauth,
        reason_code,
        reason: reason.into(),
        used_percent,
        is_quota: false,
    }
}

/// The suggestion for a Codex usage probe (`GET wham/usage` through `api-call`).
pub fn decide_codex(
    disabled: bool,
    status_code: u16,
    body: &str,
    payload: Option<&Value>,
    threshold: f64,
    plan_type: &str,
) -> Decision {
    let lower = body.to_ascii_lowercase();
    let rate_limit = payload
        .and_then(|payload| payload.get("rate_limit").or(payload.get("rateLimit")))
        .and_then(Value::as_object);
    let used = rate_limit.and_then(max_used);
    let limit_reached = rate_limit.is_some_and(|limit| {
        limit.get("allowed").and_then(Value::as_bool) == Some(false)
            || limit
                .get("limit_reached")
                .or(limit.get("limitReached"))
                .and_then(Value::as_bool)
                == Some(true)
    });
    let is_quota = status_code == 402
        || lower.contains("quota exhausted")
        || lower.contains("limit reached")
        || lower.contains("payment_required")
        || limit_reached
        || used.is_some_and(|used| used >= 100.0 || used >= threshold);
    let decision = |action, reason_code, reason: String, used_percent, is_quota| Decision {
        action,
        reason_code,
        reason,
        used_percent,
        is_quota,
    };
    if status_code == 402 && lower.contains("deactivated_workspace") {
        return decision(
            Action::Delete,
            "codex.workspace_deactivated",
            "402: the workspace is deactivated; delete the account".into(),
            used,
            false,
        );
    }
    if let Some(rate_limit) = rate_limit {
        let (five_hour, long) = classify(rate_limit, plan_type);
        let Some((long, label)) = long.filter(|(long, _)| long.used_percent.is_some()) else {
            return decision(
                Action::Keep,
                "codex.quota_incomplete",
                "quota information is incomplete; keeping the account".into(),
                used,
                false,
            );
        };
        let long_used = long.used_percent.unwrap_or_default();
        if status_code == 401 {
            return unauthorized(body, Some(long_used));
        }
        let five_hour_full = five_hour
            .and_then(|window| window.used_percent)
            .is_some_and(|used| used >= threshold);
        if long_used >= threshold {
            return if disabled {
                decision(
                    Action::Keep,
                    "codex.quota_over_threshold_disabled",
                    format!("{label} quota reached the threshold; the account is already disabled"),
                    Some(long_used),
                    true,
                )
            } else {
                decision(
                    Action::Disable,
                    "codex.quota_over_threshold",
                    format!("{label} quota reached the threshold; disable the account"),
                    Some(long_used),
                    true,
                )
            };
        }
        if disabled {
            return if five_hour_full {
                decision(
                    Action::Keep,
                    "codex.five_hour_still_full",
                    format!(
                        "the five-hour quota is still at the threshold; {label} quota has room but the account stays disabled"
                    ),
                    Some(long_used),
                    true,
                )
            } else {
                decision(
                    Action::Enable,
                    "codex.quota_available",
                    format!("{label} quota has room; enable the account"),
                    Some(long_used),
                    false,
                )
            };
        }
        if five_hour_full {
            return decision(
                Action::Keep,
                "codex.five_hour_full",
                format!(
                    "the five-hour quota reached the threshold but {label} quota has room; not disabling"
                ),
                Some(long_used),
                false,
            );
        }
        return decision(
            Action::Keep,
            "codex.healthy",
            format!("{label} quota has room; nothing to do"),
            Some(long_used),
            false,
        );
    }
    if status_code == 401 {
        return unauthorized(body, used);
    }
    let over = used.is_some_and(|used| used >= threshold);
    if is_quota || over {
        return if disabled {
            decision(
                Action::Keep,
                "codex.quota_exhausted_disabled",
                "the quota is exhausted; the account is already disabled".into(),
                used,
                is_quota,
            )
        } else {
            decision(
                Action::Disable,
                "codex.quota_exhausted",
                "the quota is exhausted; disable the account".into(),
                used,
                is_quota,
            )
        };
    }
    if status_code == 200 && disabled {
        return match used {
            Some(_) => decision(
                Action::Enable,
                "codex.recovered",
                "the account is healthy again; enable it".into(),
                used,
                false,
            ),
            None => decision(
                Action::Keep,
                "codex.recovery_unknown",
                "quota information is incomplete; cannot confirm recovery".into(),
                used,
                false,
            ),
        };
    }
    decision(
        Action::Keep,
        "codex.healthy",
        "nothing to do".into(),
        used,
        false,
    )
}

/// The quota windows of a Codex usage answer, in the panel's `QuotaWindow` shape.
pub fn codex_quota_windows(payload: Option<&Value>, plan_type: &str, now_ms: i64) -> Vec<Value> {
    let mut windows = Vec::new();
    let Some(payload) = payload else {
        return windows;
    };
    let team = plan_type.eq_ignore_ascii_case("team");
    let mut add = |prefix: &str, rate_limit: Option<&Value>| {
        let Some(rate_limit) = rate_limit.and_then(Value::as_object) else {
            return;
        };
        for (index, key) in [
            ("primary", "primary_window"),
            ("secondary", "secondary_window"),
        ]
        .iter()
        .enumerate()
        {
            let Some(window) = window(rate_limit.get(key.1)) else {
                continue;
            };
            let seconds = window
                .limit_window_seconds
                .map(|seconds| seconds.round() as i64);
            let id = match (seconds, key.0) {
                (Some(FIVE_HOURS), _) | (None, "primary") => "five-hour".to_string(),
                (Some(WEEK), _) => "weekly".to_string(),
                (Some(seconds), _) if is_month(seconds) => "monthly".to_string(),
                (None, _) if team => "monthly".to_string(),
                (None, _) => "weekly".to_string(),
                (Some(seconds), _) => format!("window-{seconds}-{index}"),
            };
            let id = if prefix.is_empty() {
                id
            } else {
                format!("{prefix}-{id}")
            };
            let reset_at_ms = window
                .reset_at
                .map(|at| {
                    if at > 1e12 {
                        at as i64
                    } else {
                        (at * 1000.0) as i64
                    }
                })
                .or(window
                    .reset_after_seconds
                    .map(|after| now_ms + (after * 1000.0) as i64));
            let mut item = json!({
                "id": id,
                "labelKey": format!("codex_quota.{}", id.replace('-', "_")),
                "resetLabel": reset_at_ms.map(crate::event::format_timestamp_ms).unwrap_or_default(),
            });
            if let Some(object) = item.as_object_mut() {
                if let Some(used) = window.used_percent {
                    object.insert("usedPercent".into(), json!(used));
                }
                if let Some(at) = reset_at_ms {
                    object.insert("resetAtMs".into(), json!(at));
                    object.insert(
                        "resetAccuracy".into(),
                        json!(if window.reset_at.is_some() {
                            "exact"
                        } else {
                            "estimated"
                        }),
                    );
                }
                if let Some(seconds) = seconds {
                    object.insert("limitWindowSeconds".into(), json!(seconds));
                }
            }
            windows.push(item);
        }
    };
    add("", payload.get("rate_limit").or(payload.get("rateLimit")));
    add(
        "code-review",
        payload
            .get("code_review_rate_limit")
            .or(payload.get("codeReviewRateLimit")),
    );
    windows
}

/// Whether a Codex usage answer reported its quota inventory at all.
pub fn codex_inventory_observed(payload: Option<&Value>) -> bool {
    payload.is_some_and(|payload| {
        [
            "rate_limit",
            "rateLimit",
            "code_review_rate_limit",
            "additional_rate_limits",
        ]
        .iter()
        .any(|key| payload.get(*key).is_some_and(|value| !value.is_null()))
    })
}

/// The quota snapshot observation a stored Codex inspection result makes (automation
/// spec §2.4, source `inspection`): its quota windows, the reset from `resetAtMs`
/// (`estimated` becomes `derived`), `complete` when the probe succeeded and reported
/// its inventory, else `partial`; observation id `run:<run>:result:<result>`.
/// `None` for other providers, results without windows, or no account identity.
pub fn inspection_observation(result: &RunResult, now_ms: i64) -> Option<Observation> {
    if normalize_provider(&result.provider) != "codex" || result.quota_windows_json.is_empty() {
        return None;
    }
    let target = AccountTarget {
        account_key: String::new(),
        account_snapshot: result.account_snapshot.clone(),
        auth_label_snapshot: String::new(),
        auth_file_snapshot: result.file_name.clone(),
        auth_provider_snapshot: "codex".into(),
        auth_project_id_snapshot: String::new(),
        auth_index: result.auth_index.clone(),
        source: String::new(),
    };
    let account_key = target.key();
    if account_key.is_empty() {
        return None;
    }
    let listed: Vec<Value> = serde_json::from_str(&result.quota_windows_json).ok()?;
    let mut windows = Vec::new();
    for item in &listed {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        let (window_id, scope_kind, scope_key) = match id.strip_prefix("code-review-") {
            Some(rest) => (rest.to_string(), "feature", "code_review"),
            None => (id.to_string(), "family", "codex_main"),
        };
        let duration = item.get("limitWindowSeconds").and_then(Value::as_i64);
        let reset = item.get("resetAtMs").and_then(Value::as_i64);
        let accuracy = match item.get("resetAccuracy").and_then(Value::as_str) {
            Some("exact") => "exact",
            Some(_) => "derived",
            None => "unknown",
        };
        let known = duration.is_some_and(|seconds| seconds > 0) && reset.is_some_and(|at| at > 0);
        windows.push(WindowInput {
            provider_window_id: window_id,
            window_mode: if known { "fixed" } else { "unknown" }.into(),
            model_scope_kind: scope_kind.into(),
            model_scope_key: scope_key.into(),
            boundary_accuracy: if known { accuracy } else { "unknown" }.into(),
            cycle_start_ms: match (known, reset, duration) {
                (true, Some(end), Some(seconds)) => Some(end - seconds * 1000),
                _ => None,
            },
            cycle_end_ms: reset.filter(|_| known),
            duration_seconds: duration.filter(|seconds| *seconds > 0),
            used_percent: item
                .get("usedPercent")
                .and_then(Value::as_f64)
                .map(|used| used.clamp(0.0, 100.0)),
            plan_type: result.plan_type.clone(),
            ..WindowInput::default()
        });
    }
    // The five-hour window runs inside the long one of the same scope.
    for scope in ["codex_main", "code_review"] {
        let long = windows
            .iter()
            .find(|window| {
                window.model_scope_key == scope
                    && matches!(window.provider_window_id.as_str(), "weekly" | "monthly")
            })
            .map(|window| window.provider_window_id.clone());
        if let Some(long) = long {
            for window in &mut windows {
                if window.model_scope_key == scope && window.provider_window_id == "five-hour" {
                    window.relationship_kind = "concurrent_subwindow".into();
                    window.container_provider_window_id = long.clone();
                }
            }
        }
    }
    let succeeded = result
        .status_code
        .is_some_and(|status| (200..300).contains(&status))
        && result.error.is_empty();
    if windows.is_empty() && !(succeeded && result.quota_inventory_observed) {
        return None;
    }
    Some(Observation {
        account_key,
        provider: "codex".into(),
        source: "inspection".into(),
        source_observation_id: format!("run:{}:result:{}", result.run_id, result.id),
        inventory_scope_key: "codex:rate-limits".into(),
        inventory_mode: if succeeded && result.quota_inventory_observed {
            "complete"
        } else {
            "partial"
        }
        .into(),
        observed_at_ms: if result.created_at_ms > 0 {
            result.created_at_ms.min(now_ms)
        } else {
            now_ms
        },
        windows,
        removals: Vec::new(),
    })
}

/// The verdict on an xAI billing probe. Reasons are the panel's i18n keys.
pub fn decide_xai(
    disabled: bool,
    status_code: u16,
    body: &str,
) -> (Action, &'static str, &'static str) {
    let lower = body.to_ascii_lowercase();
    if (200..300).contains(&status_code) {
        return (Action::Keep, "monitoring.xai_inspection_reason_healthy", "");
    }
    let kind = if lower.contains("free-usage-exhausted") || lower.contains("free usage") {
        "free_quota_exhausted"
    } else if lower.contains("spending limit") || lower.contains("spending_limit") {
        "spending_limit"
    } else if status_code == 401
        || lower.contains("invalid api key")
        || lower.contains("invalid credentials")
        || lower.contains("unauthenticated")
    {
        "auth_invalid"
    } else if status_code == 426 {
        "client_outdated"
    } else if lower.contains("policy") {
        "policy_denied"
    } else if lower.contains("entitlement") || lower.contains("not entitled") {
        "entitlement_denied"
    } else {
        match status_code {
            429 => "rate_limited",
            403 => "permission_unknown",
            402 => "quota_or_entitlement_unknown",
            400 | 422 => "probe_invalid",
            404 => "model_unavailable",
            0 | 500..=599 => "upstream_error",
            _ => "unknown",
        }
    };
    let action = match kind {
        "free_quota_exhausted" | "spending_limit" | "entitlement_denied" if !disabled => {
            Action::Disable
        }
        "auth_invalid" => Action::Reauth,
        _ => Action::Keep,
    };
    let reason = match kind {
        "free_quota_exhausted" => "monitoring.xai_inspection_reason_free_quota_exhausted",
        "spending_limit" => "monitoring.xai_inspection_reason_spending_limit",
        "entitlement_denied" => "monitoring.xai_inspection_reason_entitlement_denied",
        "auth_invalid" => "monitoring.xai_inspection_reason_auth_invalid",
        "rate_limited" => "monitoring.xai_inspection_reason_rate_limited",
        _ => "monitoring.xai_inspection_reason_unknown",
    };
    (action, reason, kind)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    fn usage(primary: f64, secondary: f64) -> Value {
        json!({"plan_type": "plus", "rate_limit": {"allowed": true, "limit_reached": false,
            "primary_window": {"used_percent": primary, "limit_window_seconds": 18000, "reset_after_seconds": 600},
            "secondary_window": {"used_percent": secondary, "limit_window_seconds": 604800, "reset_at": 1787500000}}})
    }

    #[test]
    fn codex_decisions_follow_the_long_window() {
        let check = |disabled, status, payload: Value| {
            decide_codex(
                disabled,
                status,
                &payload.to_string(),
                Some(&payload),
                100.0,
                "plus",
            )
        };
        assert_eq!(check(false, 200, usage(20.0, 30.0)).action, Action::Keep);
        let full = check(false, 200, usage(20.0, 100.0));
        assert_eq!(
            (full.action, full.is_quota, full.used_percent),
            (Action::Disable, true, Some(100.0))
        );
        assert_eq!(check(true, 200, usage(20.0, 100.0)).action, Action::Keep);
        assert_eq!(check(true, 200, usage(20.0, 40.0)).action, Action::Enable);
        assert_eq!(check(true, 200, usage(100.0, 40.0)).action, Action::Keep);
        assert_eq!(
            check(false, 200, usage(100.0, 40.0)).reason_code,
            "codex.five_hour_full"
        );
        let revoked = decide_codex(
            false,
            401,
            r#"{"error":{"code":"token_revoked"}}"#,
            None,
            100.0,
            "",
        );
        assert_eq!(
            (revoked.action, revoked.reason_code),
            (Action::Reauth, "codex.token_revoked")
        );
        let gone = decide_codex(
            false,
            402,
            r#"{"detail":{"code":"deactivated_workspace"}}"#,
            None,
            100.0,
            "",
        );
        assert_eq!(gone.action, Action::Delete);
        let partial = json!({"rate_limit": {"primary_window": {"used_percent": 5, "limit_window_seconds": 18000}}});
        assert_eq!(
            check(false, 200, partial).reason_code,
            "codex.quota_incomplete"
        );
    }

    #[test]
    fn windows_are_named_by_their_length() {
        let windows = codex_quota_windows(Some(&usage(20.0, 30.0)), "plus", 1_000);
        assert_eq!(windows[0]["id"], "five-hour");
        assert_eq!(windows[0]["resetAtMs"], 601_000);
        assert_eq!(windows[1]["id"], "weekly");
        assert_eq!(windows[1]["resetAtMs"], 1_787_500_000_000i64);
        assert!(codex_inventory_observed(Some(&usage(1.0, 1.0))));
        assert!(!codex_inventory_observed(Some(
            &json!({"plan_type": "plus"})
        )));
    }

    #[test]
    fn a_codex_result_becomes_an_inspection_observation() {
        let mut payload = usage(20.0, 30.0);
        payload["code_review_rate_limit"] = json!({"primary_window": {"used_percent": 5.0,
            "limit_window_seconds": 604800, "reset_at": 1787500000}});
        let windows = codex_quota_windows(Some(&payload), "plus", 1_000);
        let mut result = RunResult {
            id: 7,
            run_id: 3,
            file_name: "codex-a.json".into(),
            auth_index: "3f9c".into(),
            provider: "codex".into(),
            status_code: Some(200),
            plan_type: "plus".into(),
            quota_windows_json: Value::Array(windows).to_string(),
            quota_inventory_observed: true,
            created_at_ms: 2_000,
            ..RunResult::default()
        };
        let observation = inspection_observation(&result, 5_000).expect("observation");
        assert_eq!(observation.source, "inspection");
        assert_eq!(observation.source_observation_id, "run:3:result:7");
        assert_eq!(observation.inventory_mode, "complete");
        assert_eq!(observation.inventory_scope_key, "codex:rate-limits");
        assert_eq!(observation.observed_at_ms, 2_000);
        assert_eq!(
            observation.account_key,
            AccountTarget {
                auth_file_snapshot: "codex-a.json".into(),
                auth_provider_snapshot: "codex".into(),
                auth_index: "3f9c".into(),
                ..AccountTarget::default()
            }
            .key()
        );
        let summary: Vec<(&str, &str, &str, &str)> = observation
            .windows
            .iter()
            .map(|window| {
                (
                    window.provider_window_id.as_str(),
                    window.model_scope_key.as_str(),
                    window.window_mode.as_str(),
                    window.boundary_accuracy.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("five-hour", "codex_main", "fixed", "derived"),
                ("weekly", "codex_main", "fixed", "exact"),
                ("weekly", "code_review", "fixed", "exact"),
            ]
        );
        let five = &observation.windows[0];
        assert_eq!(five.cycle_end_ms, Some(601_000));
        assert_eq!(five.cycle_start_ms, Some(601_000 - 18_000_000));
        assert_eq!(five.container_provider_window_id, "weekly");
        assert_eq!(five.used_percent, Some(20.0));
        assert_eq!(observation.windows[2].model_scope_kind, "feature");

        // A failed probe reports what it saw, never a complete inventory.
        result.status_code = Some(500);
        result.error = "upstream error".into();
        let partial = inspection_observation(&result, 5_000).expect("observation");
        assert_eq!(partial.inventory_mode, "partial");
        // No windows reported, other providers: nothing.
        result.quota_windows_json = String::new();
        assert!(inspection_observation(&result, 5_000).is_none());
        result.quota_windows_json = "[]".into();
        assert!(inspection_observation(&result, 5_000).is_none());
        result.provider = "xai".into();
        result.quota_windows_json = "[{\"id\":\"weekly\"}]".into();
        assert!(inspection_observation(&result, 5_000).is_none());
    }

    #[test]
    fn configuration_is_normalised_like_the_go_server() {
        let config = InspectionConfig::normalize(
            &json!({"enabled": true, "schedule": {"mode": "time_points", "timePoints": ["9:05", "09:05", "25:00", "23:59"], "timeZone": "Asia/Shanghai"},
                    "targetTypes": ["xai", "codex"], "workers": 0, "usedPercentThreshold": 0.8, "autoActionMode": "weird"}),
            &InspectionConfig::default(),
        )
        .unwrap();
        assert_eq!(config.time_points, ["09:05", "23:59"]);
        assert_eq!(config.schedule_mode, "time_points");
        assert_eq!(config.target_types, ["codex", "xai"]);
        assert_eq!(config.workers, 4);
        assert_eq!(config.used_percent_threshold, 80.0);
        assert_eq!(config.auto_action_mode, "none");
        assert!(matches!(
            InspectionConfig::normalize(&json!({"schedule": {"timeZone": "Mars/Base"}}), &config),
            Err(ConfigError::TimeZone(..))
        ));
        assert!(InspectionConfig::normalize(&json!({"targetTypes": []}), &config).is_err());
        assert_eq!(
            InspectionConfig::from_stored(&Value::Null),
            InspectionConfig::default()
        );
    }

    #[test]
    fn schedules_fire_once_per_bucket() {
        let config = InspectionConfig {
            enabled: true,
            interval_minutes: 10,
            ..InspectionConfig::default()
        };
        let now = 1_787_400_000_000;
        assert_eq!(
            scheduled_trigger(&config, now, None, &TimeZone::UTC),
            Some(format!("interval:10:{}", now / 600_000))
        );
        assert_eq!(
            scheduled_trigger(&config, now, Some(now - 60_000), &TimeZone::UTC),
            None
        );
        let points = InspectionConfig {
            enabled: true,
            schedule_mode: "time_points".into(),
            time_points: vec!["08:00".into()],
            time_zone: "UTC".into(),
            ..InspectionConfig::default()
        };
        // 2026-08-22T08:00:30Z
        assert_eq!(
            scheduled_trigger(&points, 1_787_385_630_000, None, &TimeZone::UTC).as_deref(),
            Some("2026-08-22 08:00")
        );
        assert_eq!(
            scheduled_trigger(&points, 1_787_385_690_000, None, &TimeZone::UTC),
            None
        );
        // Without a zone of its own the schedule follows the caller's zone:
        // 08:00 in Shanghai is 00:00 UTC.
        let zoneless = InspectionConfig {
            time_zone: String::new(),
            ..points
        };
        let shanghai = TimeZone::get("Asia/Shanghai").unwrap();
        // 2026-08-22T00:00:30Z = 2026-08-22 08:00:30 in Shanghai
        assert_eq!(
            scheduled_trigger(&zoneless, 1_787_356_830_000, None, &shanghai).as_deref(),
            Some("2026-08-22 08:00")
        );
        assert_eq!(
            scheduled_trigger(&zoneless, 1_787_356_830_000, None, &TimeZone::UTC),
            None
        );
    }
}
