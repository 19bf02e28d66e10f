//! Quota evidence from newly collected events (automation spec §2.4): the
//! `X-Codex-Primary-*` / `X-Codex-Secondary-*` response headers of Codex events become
//! a partial `response_header` observation of the account's five-hour and weekly (or
//! monthly) windows, and a native xAI failure reporting its included free usage
//! exhausted a `response_body` observation of the rolling 24-hour window, so the
//! Accounts page shows current usage without a manual refresh.
//! Imports never produce evidence (they do not pass the collector's sink).

use cpamp_domain::UsageEvent;
use cpamp_domain::analytics::accounts::AccountTarget;
use cpamp_domain::automation::authfile::normalize_provider;
use cpamp_domain::automation::cooldown::xai_free_usage;
use cpamp_domain::automation::quota::{Observation, WindowInput};
use serde_json::Value;

/// Whether an event may carry Codex quota evidence (checked before it is kept).
pub fn carries_evidence(event: &UsageEvent) -> bool {
    provider_of(event) == "codex"
        && event
            .response_metadata_json
            .as_deref()
            .is_some_and(|text| text.contains("\"quota\""))
}

fn provider_of(event: &UsageEvent) -> String {
    normalize_provider(
        event
            .auth_provider_snapshot
            .as_deref()
            .filter(|provider| !provider.trim().is_empty())
            .or(event.provider.as_deref())
            .unwrap_or(""),
    )
}

fn window_id(minutes: Option<i64>, which: &str, team: bool, index: usize) -> String {
    match minutes {
        Some(300) => "five-hour".into(),
        Some(10_080) => "weekly".into(),
        Some(minutes) if (40_320..=44_640).contains(&minutes) => "monthly".into(),
        Some(minutes) => format!("window-{}-{index}", minutes * 60),
        None if which == "primary" => "five-hour".into(),
        None if team => "monthly".into(),
        None => "weekly".into(),
    }
}

/// The rolling window of xAI's included free usage, as the Go server named it.
const XAI_FREE_WINDOW: &str = "included-free-rolling-24h";
const DAY_SECONDS: i64 = 86_400;

fn target_of(event: &UsageEvent, provider: &str) -> AccountTarget {
    AccountTarget {
        account_key: String::new(),
        account_snapshot: event.account_snapshot.clone().unwrap_or_default(),
        auth_label_snapshot: event.auth_label_snapshot.clone().unwrap_or_default(),
        auth_file_snapshot: event.auth_file_snapshot.clone().unwrap_or_default(),
        auth_provider_snapshot: provider.to_string(),
        auth_project_id_snapshot: event.auth_project_id_snapshot.clone().unwrap_or_default(),
        auth_index: event.auth_index.clone().unwrap_or_default(),
        source: event.source.clone().unwrap_or_default(),
    }
}

/// A native xAI failure with its free usage exhausted: one estimated rolling window,
/// used up, ending when the usage recovers.
fn xai_observation(event: &UsageEvent) -> Option<Observation> {
    let (recover_at_ms, evidence) = xai_free_usage(event, event.timestamp_ms)?;
    let account_key = target_of(event, "xai").key();
    if account_key.is_empty() {
        return None;
    }
    let actual = evidence.get("actual").and_then(Value::as_f64);
    let limit = evidence.get("limit").and_then(Value::as_f64);
    let used_percent = match (actual, limit) {
        (Some(actual), Some(limit)) if limit > 0.0 => (actual / limit * 100.0).clamp(0.0, 100.0),
        _ => 100.0,
    };
    let model = evidence
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some(Observation {
        account_key,
        provider: "xai".into(),
        source: "response_body".into(),
        source_observation_id: event
            .request_id
            .clone()
            .unwrap_or_else(|| event.event_hash.clone()),
        inventory_scope_key: "xai:included-free".into(),
        inventory_mode: "partial".into(),
        observed_at_ms: event.timestamp_ms,
        windows: vec![WindowInput {
            provider_window_id: XAI_FREE_WINDOW.into(),
            window_mode: "rolling".into(),
            model_scope_kind: if model.is_some() { "models" } else { "all" }.into(),
            model_ids: model.into_iter().collect(),
            boundary_accuracy: "estimated".into(),
            cycle_start_ms: Some(recover_at_ms - DAY_SECONDS * 1000),
            cycle_end_ms: Some(recover_at_ms),
            duration_seconds: Some(DAY_SECONDS),
            used_percent: Some(used_percent),
            remaining_percent: Some(100.0 - used_percent),
            used_value: actual,
            limit_value: limit,
            quota_unit: "tokens".into(),
            ..WindowInput::default()
        }],
        removals: Vec::new(),
    })
}

/// The observation an event makes, if any: Codex quota headers or an xAI
/// free-usage failure.
pub fn observation_of(event: &UsageEvent) -> Option<Observation> {
    let provider = provider_of(event);
    if provider != "codex" {
        return xai_observation(event);
    }
    let metadata: Value = serde_json::from_str(event.response_metadata_json.as_deref()?).ok()?;
    let quota = metadata.get("quota")?.as_object()?;
    let account_key = target_of(event, &provider).key();
    if account_key.is_empty() {
        return None;
    }
    let plan = quota
        .get("plan_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let team = plan.eq_ignore_ascii_case("team");
    let mut windows = Vec::new();
    for (index, which) in ["primary", "secondary"].iter().enumerate() {
        let Some(window) = quota.get(*which).and_then(Value::as_object) else {
            continue;
        };
        let used = window.get("used_percent").and_then(Value::as_f64);
        let minutes = window.get("window_minutes").and_then(Value::as_i64);
        let reset = window.get("reset_at_ms").and_then(Value::as_i64);
        let relative = window
            .get("reset_after_seconds")
            .and_then(Value::as_i64)
            .is_some_and(|seconds| seconds > 0);
        if minutes.is_none() && reset.is_none() && used.is_none_or(|used| used == 0.0) {
            continue;
        }
        let duration = minutes.map(|minutes| minutes * 60);
        let known = duration.is_some() && reset.is_some();
        windows.push(WindowInput {
            provider_window_id: window_id(minutes, which, team, index),
            window_kind: String::new(),
            window_mode: if known { "fixed" } else { "unknown" }.into(),
            model_scope_kind: "family".into(),
            model_scope_key: "codex_main".into(),
            boundary_accuracy: match (known, relative) {
                (true, true) => "derived",
                (true, false) => "exact",
                _ => "unknown",
            }
            .into(),
            cycle_start_ms: match (reset, duration) {
                (Some(end), Some(seconds)) => Some(end - seconds * 1000),
                _ => None,
            },
            cycle_end_ms: reset,
            duration_seconds: duration,
            used_percent: used.map(|used| used.clamp(0.0, 100.0)),
            plan_type: plan.clone(),
            ..WindowInput::default()
        });
    }
    if windows.is_empty() {
        return None;
    }
    // The five-hour window runs inside the long one.
    let long = windows
        .iter()
        .find(|window| {
            window.provider_window_id == "weekly" || window.provider_window_id == "monthly"
        })
        .map(|window| window.provider_window_id.clone());
    if let Some(long) = long {
        for window in &mut windows {
            if window.provider_window_id == "five-hour" {
                window.relationship_kind = "concurrent_subwindow".into();
                window.container_provider_window_id = long.clone();
            }
        }
    }
    Some(Observation {
        account_key,
        provider,
        source: "response_header".into(),
        source_observation_id: event
            .request_id
            .clone()
            .or(event.header_trace_id.clone())
            .unwrap_or_default(),
        inventory_scope_key: "codex:rate-limits".into(),
        inventory_mode: "partial".into(),
        observed_at_ms: event.timestamp_ms,
        windows,
        removals: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_headers_become_two_windows() {
        let event = UsageEvent {
            provider: Some("codex".into()),
            auth_file_snapshot: Some("codex-a.json".into()),
            auth_index: Some("3f9c".into()),
            request_id: Some("req-1".into()),
            timestamp_ms: 1_000_000,
            response_metadata_json: Some(
                r#"{"quota":{"plan_type":"plus","primary":{"used_percent":12.0,"window_minutes":300,"reset_after_seconds":600,"reset_at_ms":1600000},"secondary":{"used_percent":40.0,"window_minutes":10080,"reset_at_ms":9000000}}}"#.into(),
            ),
            ..UsageEvent::default()
        };
        assert!(carries_evidence(&event));
        let observation = observation_of(&event).expect("observation");
        assert_eq!(observation.source_observation_id, "req-1");
        assert_eq!(observation.inventory_scope_key, "codex:rate-limits");
        let ids: Vec<&str> = observation
            .windows
            .iter()
            .map(|window| window.provider_window_id.as_str())
            .collect();
        assert_eq!(ids, ["five-hour", "weekly"]);
        let five = &observation.windows[0];
        assert_eq!(
            (five.window_mode.as_str(), five.boundary_accuracy.as_str()),
            ("fixed", "derived")
        );
        assert_eq!(five.cycle_start_ms, Some(1_600_000 - 18_000_000));
        assert_eq!(five.container_provider_window_id, "weekly");
        assert_eq!(observation.windows[1].boundary_accuracy, "exact");

        let claude = UsageEvent {
            provider: Some("claude".into()),
            ..event
        };
        assert!(observation_of(&claude).is_none());
    }

    #[test]
    fn an_xai_free_usage_failure_becomes_the_rolling_window() {
        let event = UsageEvent {
            event_hash: "h1".into(),
            provider: Some("xai".into()),
            auth_file_snapshot: Some("xai-d.json".into()),
            auth_index: Some("9d".into()),
            request_id: Some("req-x".into()),
            model: "grok-4".into(),
            timestamp_ms: 1_000_000,
            failed: true,
            fail_status_code: Some(429),
            fail_summary: Some(
                r#"{"code":"subscription:free-usage-exhausted","error":"free usage for model grok-4 exhausted. Tokens (actual/limit): 1200/1000"}"#.into(),
            ),
            ..UsageEvent::default()
        };
        let observation = observation_of(&event).expect("observation");
        assert_eq!(
            (
                observation.provider.as_str(),
                observation.source.as_str(),
                observation.inventory_scope_key.as_str(),
                observation.source_observation_id.as_str()
            ),
            ("xai", "response_body", "xai:included-free", "req-x")
        );
        let window = &observation.windows[0];
        assert_eq!(window.provider_window_id, "included-free-rolling-24h");
        assert_eq!(
            (
                window.window_mode.as_str(),
                window.boundary_accuracy.as_str()
            ),
            ("rolling", "estimated")
        );
        assert_eq!(window.duration_seconds, Some(86_400));
        // No reset in the body: 24 hours after the failure.
        assert_eq!(window.cycle_end_ms, Some(1_000_000 + 86_400_000));
        assert_eq!(
            (window.used_value, window.limit_value, window.used_percent),
            (Some(1200.0), Some(1000.0), Some(100.0))
        );
        assert_eq!(
            (window.model_scope_kind.as_str(), window.model_ids.clone()),
            ("models", vec!["grok-4".to_string()])
        );

        // Other failures, or a proxy merely named grok, are no evidence.
        let other = UsageEvent {
            fail_summary: Some("rate limited".into()),
            ..event.clone()
        };
        assert!(observation_of(&other).is_none());
        let proxy = UsageEvent {
            provider: Some("grok".into()),
            ..event
        };
        assert!(observation_of(&proxy).is_none());
    }
}
