//! Quota snapshots (automation spec §2.1–§2.3): `POST /v0/management/quota-snapshots`
//! records observations of accounts' quota windows, `POST …/quota-snapshots/query`
//! answers each account's current windows.
//!
//! Bodies are strict (unknown fields are rejected) and every rule answers 400 with a
//! message naming the field; a storage failure is 500 (the Go server answered 400).
//! Simplifications against the Go server: a window's current cycle is the reported
//! boundary of its newest report and the previous cycle the newest report of an earlier
//! one (the Go server kept a cycle state machine); availability follows the inventory
//! rules (complete observations infer absence, delta observations remove).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use cpamp_domain::analytics::accounts::AccountTarget;
use cpamp_domain::automation::authfile::normalize_provider;
use cpamp_domain::automation::quota::{
    Observation, StoredWindow, WindowInput, WindowRemoval, canonical_codex_window, is_stale,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorCode};
use crate::state::{AppState, Store};

const MAX_ENTRIES: usize = 400;
const MAX_QUERY_ACCOUNTS: usize = 200;
const FUTURE_SLACK_MS: i64 = 5 * 60 * 1000;

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    // The admin key is checked before the method (as the Go server did here).
    let not_allowed = || {
        web::to(|_admin: AdminAuth| async {
            Err::<HttpResponse, _>(ApiError::method_not_allowed())
        })
    };
    for path in [
        "/v0/management/quota-snapshots",
        "/v0/management/quota-snapshots/",
    ] {
        config.service(
            web::resource(path)
                .route(web::post().to(write::<S>))
                .default_service(not_allowed()),
        );
    }
    for path in [
        "/v0/management/quota-snapshots/query",
        "/v0/management/quota-snapshots/query/",
    ] {
        config.service(
            web::resource(path)
                .route(web::post().to(query::<S>))
                .default_service(not_allowed()),
        );
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::RequestFailed, message)
}

/// A strict body, or 400 with the parser's words.
fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| invalid(error.to_string()))
}

/// Between 1 and `max` items of `what`.
fn check_count(what: &str, count: usize, max: usize) -> Result<(), ApiError> {
    if count == 0 {
        return Err(invalid(format!("{what} are required")));
    }
    if count > max {
        return Err(invalid(format!(
            "{what} must be less than or equal to {max}"
        )));
    }
    Ok(())
}

/// Storage failures are the server's problem, not the request's (the Go server said 400).
fn storage_failed(error: cpamp_domain::StoreError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::RequestFailed,
        error.to_string(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountInput {
    #[serde(default)]
    account_snapshot: String,
    #[serde(default)]
    auth_label_snapshot: String,
    #[serde(default)]
    auth_file_snapshot: String,
    #[serde(default)]
    auth_provider_snapshot: String,
    #[serde(default)]
    auth_project_id_snapshot: String,
    #[serde(default)]
    auth_index: Option<Value>,
    #[serde(default)]
    source: String,
}

impl AccountInput {
    /// The account key (account-history identity; the provider defaults to the entry's).
    fn key(&self, provider: &str) -> Option<String> {
        let index = match &self.auth_index {
            Some(Value::String(text)) => text.trim().to_string(),
            Some(Value::Number(number)) => number.to_string(),
            _ => String::new(),
        };
        let target = AccountTarget {
            account_key: String::new(),
            account_snapshot: self.account_snapshot.clone(),
            auth_label_snapshot: self.auth_label_snapshot.clone(),
            auth_file_snapshot: self.auth_file_snapshot.clone(),
            auth_provider_snapshot: if self.auth_provider_snapshot.trim().is_empty() {
                provider.to_string()
            } else {
                self.auth_provider_snapshot.clone()
            },
            auth_project_id_snapshot: self.auth_project_id_snapshot.clone(),
            auth_index: index,
            source: self.source.clone(),
        };
        Some(target.key()).filter(|key| !key.is_empty())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObservationInput {
    #[serde(default)]
    source: String,
    #[serde(default)]
    source_observation_id: String,
    #[serde(default)]
    observed_at_ms: i64,
    #[serde(default)]
    inventory_scope_key: String,
    #[serde(default)]
    inventory_mode: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetCredit {
    #[serde(default)]
    id: String,
    #[serde(default)]
    expires_at_ms: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    #[serde(default)]
    provider_window_id: String,
    #[serde(default)]
    provider_window_aliases: Vec<String>,
    #[serde(default)]
    window_kind: String,
    #[serde(default)]
    window_mode: String,
    #[serde(default)]
    model_scope_kind: String,
    #[serde(default)]
    model_scope_key: String,
    #[serde(default)]
    model_ids: Vec<String>,
    #[serde(default)]
    source: String,
    #[serde(default)]
    source_observation_id: String,
    #[serde(default)]
    observed_at_ms: i64,
    #[serde(default)]
    boundary_accuracy: String,
    cycle_start_ms: Option<i64>,
    cycle_end_ms: Option<i64>,
    duration_seconds: Option<i64>,
    used_percent: Option<f64>,
    remaining_percent: Option<f64>,
    used_value: Option<f64>,
    limit_value: Option<f64>,
    #[serde(default)]
    quota_unit: String,
    reset_credits_available: Option<f64>,
    #[serde(default)]
    reset_credits: Vec<ResetCredit>,
    #[serde(default)]
    plan_type: String,
    #[serde(default)]
    relationship_kind: String,
    #[serde(default)]
    container_provider_window_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovalBody {
    #[serde(default)]
    provider_window_id: String,
    #[serde(default)]
    window_kind: String,
    #[serde(default)]
    model_scope_kind: String,
    #[serde(default)]
    model_scope_key: String,
    #[serde(default)]
    model_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBody {
    #[serde(default)]
    row_key: Option<String>,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    account: AccountInput,
    #[serde(default)]
    observation: Option<ObservationInput>,
    #[serde(default)]
    windows: Vec<WindowBody>,
    #[serde(default)]
    removed_windows: Vec<RemovalBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    #[serde(default)]
    entries: Vec<EntryBody>,
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String, ApiError> {
    let normalized = value.trim().to_ascii_lowercase();
    if allowed.contains(&normalized.as_str()) {
        Ok(normalized)
    } else {
        Err(invalid(format!("unsupported {field} {value:?}")))
    }
}

const PROVIDERS: &[&str] = &["codex", "claude", "antigravity", "kimi", "xai"];
const MODES: &[&str] = &["fixed", "calendar", "rolling", "non_window", "unknown"];
const SCOPES: &[&str] = &["all", "family", "models", "product", "feature"];
const SOURCES: &[&str] = &[
    "api_query",
    "response_header",
    "response_body",
    "inspection",
];
const ACCURACIES: &[&str] = &["exact", "derived", "estimated", "unknown"];
const INVENTORY: &[&str] = &["complete", "partial", "delta"];

fn window_input(
    provider: &str,
    body: &WindowBody,
    observation: &Observation,
) -> Result<WindowInput, ApiError> {
    let id = body.provider_window_id.trim();
    if id.is_empty() {
        return Err(invalid("provider_window_id is required"));
    }
    if body.provider_window_aliases.len() > 32 {
        return Err(invalid("provider_window_aliases must be at most 32"));
    }
    if body.model_ids.len() > 200 {
        return Err(invalid("model_ids must be at most 200"));
    }
    let source = one_of("source", &body.source, SOURCES)?;
    if source != observation.source
        || (body.observed_at_ms > 0 && body.observed_at_ms != observation.observed_at_ms)
        || (!body.source_observation_id.is_empty()
            && body.source_observation_id != observation.source_observation_id)
    {
        return Err(invalid(
            "window source, observed_at_ms and source_observation_id must match the observation",
        ));
    }
    let mode = one_of("window_mode", &body.window_mode, MODES)?;
    let scope = one_of("model_scope_kind", &body.model_scope_kind, SCOPES)?;
    let accuracy = one_of("boundary_accuracy", &body.boundary_accuracy, ACCURACIES)?;
    if scope == "models" && body.model_ids.is_empty() {
        return Err(invalid("model_ids are required for a models scope"));
    }
    for (name, value) in [
        ("used_percent", body.used_percent),
        ("remaining_percent", body.remaining_percent),
    ] {
        if value.is_some_and(|value| !(0.0..=100.0).contains(&value)) {
            return Err(invalid(format!("{name} must be between 0 and 100")));
        }
    }
    for (name, value) in [
        ("used_value", body.used_value),
        ("limit_value", body.limit_value),
        ("reset_credits_available", body.reset_credits_available),
    ] {
        if value.is_some_and(|value| value < 0.0 || !value.is_finite()) {
            return Err(invalid(format!("{name} must be at least 0")));
        }
    }
    if body.duration_seconds.is_some_and(|duration| duration <= 0) {
        return Err(invalid("duration_seconds must be greater than 0"));
    }
    if mode == "rolling" && body.duration_seconds.is_none() {
        return Err(invalid("duration_seconds is required for a rolling window"));
    }
    let (mut start, mut end) = (body.cycle_start_ms, body.cycle_end_ms);
    if start.is_some_and(|start| start <= 0) || end.is_some_and(|end| end <= 0) {
        return Err(invalid("cycle boundaries must be greater than 0"));
    }
    let mut duration = body.duration_seconds;
    match (start, end, duration) {
        (Some(from), Some(to), _) if from >= to => {
            return Err(invalid("cycle_start_ms must be before cycle_end_ms"));
        }
        (Some(from), Some(to), Some(seconds)) if to - from != seconds * 1000 => {
            return Err(invalid("the cycle boundaries must span duration_seconds"));
        }
        (Some(from), Some(to), None) if (to - from) % 1000 == 0 => {
            duration = Some((to - from) / 1000)
        }
        (Some(from), None, Some(seconds)) => end = Some(from + seconds * 1000),
        (None, Some(to), Some(seconds)) => start = Some(to - seconds * 1000),
        _ => {}
    }
    if matches!(mode.as_str(), "fixed" | "calendar")
        && matches!(accuracy.as_str(), "exact" | "derived")
        && (end.is_none() || (start.is_none() && duration.is_none()))
    {
        return Err(invalid(
            "fixed and calendar windows with exact or derived boundaries need cycle_end_ms and a start or duration",
        ));
    }
    if body.relationship_kind.trim().is_empty()
        != body.container_provider_window_id.trim().is_empty()
    {
        return Err(invalid(
            "relationship_kind and container_provider_window_id go together",
        ));
    }
    if !body.relationship_kind.trim().is_empty() {
        one_of(
            "relationship_kind",
            &body.relationship_kind,
            &["concurrent_subwindow"],
        )?;
        if body.container_provider_window_id.trim() == id {
            return Err(invalid("a window cannot contain itself"));
        }
    }
    let mut credits = Vec::new();
    if body.reset_credits.len() > 100 {
        return Err(invalid("reset_credits must be at most 100"));
    }
    for credit in &body.reset_credits {
        if credit.id.trim().is_empty() || credit.id.len() > 256 || credit.expires_at_ms <= 0 {
            return Err(invalid(
                "reset credits need an id (at most 256 bytes) and expires_at_ms",
            ));
        }
        credits.push(json!({"id": credit.id.trim(), "expires_at_ms": credit.expires_at_ms}));
    }
    let window_id = if provider == "codex" {
        canonical_codex_window(id, &body.window_kind)
    } else {
        id.to_string()
    };
    Ok(WindowInput {
        provider_window_id: window_id,
        provider_window_aliases: body.provider_window_aliases.clone(),
        window_kind: body.window_kind.trim().to_string(),
        window_mode: mode,
        model_scope_kind: scope,
        model_scope_key: body.model_scope_key.trim().to_string(),
        model_ids: body.model_ids.clone(),
        boundary_accuracy: accuracy,
        cycle_start_ms: start,
        cycle_end_ms: end,
        duration_seconds: duration,
        used_percent: body.used_percent,
        remaining_percent: body.remaining_percent,
        used_value: body.used_value,
        limit_value: body.limit_value,
        quota_unit: body.quota_unit.trim().to_string(),
        reset_credits_available: body.reset_credits_available,
        reset_credits_json: if credits.is_empty() {
            String::new()
        } else {
            Value::Array(credits).to_string()
        },
        plan_type: body.plan_type.trim().to_string(),
        relationship_kind: body.relationship_kind.trim().to_string(),
        container_provider_window_id: body.container_provider_window_id.trim().to_string(),
    })
}

fn observation_of(entry: &EntryBody, now_ms: i64) -> Result<(Observation, String), ApiError> {
    let provider = normalize_provider(&entry.provider);
    let provider = one_of("provider", &provider, PROVIDERS)?;
    let account_key = entry
        .account
        .key(&provider)
        .ok_or_else(|| invalid("account identity is required"))?;
    let first = entry.windows.first();
    let given = entry.observation.as_ref();
    let source = given
        .map(|observation| observation.source.clone())
        .filter(|source| !source.trim().is_empty())
        .or_else(|| first.map(|window| window.source.clone()))
        .unwrap_or_default();
    let source = one_of("source", &source, SOURCES)?;
    let mode = given
        .map(|observation| observation.inventory_mode.clone())
        .filter(|mode| !mode.trim().is_empty())
        .unwrap_or_else(|| "partial".into());
    let mode = one_of("inventory_mode", &mode, INVENTORY)?;
    let scope = given
        .map(|observation| observation.inventory_scope_key.trim().to_string())
        .filter(|scope| !scope.is_empty())
        .unwrap_or_else(|| {
            if provider == "codex" {
                "codex:rate-limits".into()
            } else {
                format!("{provider}:quota-windows")
            }
        });
    let mut observed_at_ms = given
        .map(|observation| observation.observed_at_ms)
        .or_else(|| first.map(|window| window.observed_at_ms))
        .unwrap_or(0);
    if observed_at_ms <= 0 {
        observed_at_ms = now_ms;
    }
    if observed_at_ms > now_ms + FUTURE_SLACK_MS {
        return Err(invalid(
            "observed_at_ms is more than 5 minutes in the future",
        ));
    }
    let source_observation_id = given
        .map(|observation| observation.source_observation_id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| first.map(|window| window.source_observation_id.clone()))
        .unwrap_or_default();
    if source_observation_id.len() > 256 {
        return Err(invalid("source_observation_id must be at most 256 bytes"));
    }
    let mut observation = Observation {
        account_key: account_key.clone(),
        provider: provider.clone(),
        source,
        source_observation_id,
        inventory_scope_key: scope,
        inventory_mode: mode.clone(),
        observed_at_ms,
        windows: Vec::new(),
        removals: Vec::new(),
    };
    if mode == "partial" && entry.windows.is_empty() && entry.removed_windows.is_empty() {
        return Err(invalid("windows are required for partial observations"));
    }
    if !entry.removed_windows.is_empty() && mode != "delta" {
        return Err(invalid("removed_windows require a delta observation"));
    }
    let mut seen = Vec::new();
    for body in &entry.windows {
        let window = window_input(&provider, body, &observation)?;
        let key = (
            window.provider_window_id.clone(),
            window.scope_fingerprint(),
        );
        if seen.contains(&key) {
            return Err(invalid(format!(
                "window {:?} is reported twice",
                window.provider_window_id
            )));
        }
        seen.push(key);
        observation.windows.push(window);
    }
    for removal in &entry.removed_windows {
        let id = removal.provider_window_id.trim();
        if id.is_empty() {
            return Err(invalid("removed_windows need a provider_window_id"));
        }
        let id = if provider == "codex" {
            canonical_codex_window(id, &removal.window_kind)
        } else {
            id.to_string()
        };
        let fingerprint = if removal.model_scope_kind.is_empty() {
            String::new()
        } else {
            WindowInput {
                model_scope_kind: removal.model_scope_kind.trim().to_ascii_lowercase(),
                model_scope_key: removal.model_scope_key.trim().to_string(),
                model_ids: removal.model_ids.clone(),
                ..WindowInput::default()
            }
            .scope_fingerprint()
        };
        if seen.iter().any(|(window, _)| *window == id) {
            return Err(invalid(format!(
                "window {id:?} is both reported and removed"
            )));
        }
        observation.removals.push(WindowRemoval {
            provider_window_id: id,
            scope_fingerprint: fingerprint,
        });
    }
    Ok((observation, account_key))
}

async fn write<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: WriteBody = decode(&body)?;
    check_count("entries", body.entries.len(), MAX_ENTRIES)?;
    let mutations: usize = body
        .entries
        .iter()
        .map(|entry| entry.windows.len() + entry.removed_windows.len())
        .sum();
    if mutations > MAX_ENTRIES {
        return Err(invalid(
            "window mutations must be less than or equal to 400",
        ));
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let mut observations = Vec::with_capacity(body.entries.len());
    let mut keys = Vec::with_capacity(body.entries.len());
    for entry in &body.entries {
        let (observation, key) = observation_of(entry, now)?;
        keys.push((entry.row_key.clone(), key, observation.provider.clone()));
        observations.push(observation);
    }
    let inserted = state
        .store
        .write_observations(observations, now)
        .await
        .map_err(storage_failed)?;
    let items: Vec<Value> = keys
        .into_iter()
        .zip(inserted)
        .map(|((row_key, account_key, provider), count)| {
            let mut item =
                json!({"account_key": account_key, "provider": provider, "inserted_count": count});
            if let (Some(row_key), Some(object)) = (row_key, item.as_object_mut()) {
                object.insert("row_key".into(), Value::String(row_key));
            }
            item
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"observed_at_ms": now, "items": items})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryAccount {
    #[serde(default)]
    row_key: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    account: AccountInput,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    #[serde(default)]
    accounts: Vec<QueryAccount>,
    now_ms: Option<i64>,
    #[serde(default)]
    include_inactive: bool,
}

fn window_json(window: &StoredWindow, now_ms: i64) -> Value {
    let input = &window.input;
    let mut item = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() && value != json!("") && value != json!([]) {
            item.insert(key.into(), value);
        }
    };
    put("provider_window_id", json!(input.provider_window_id));
    put(
        "provider_window_aliases",
        json!(input.provider_window_aliases),
    );
    put("window_kind", json!(input.window_kind));
    put("window_mode", json!(input.window_mode));
    put("model_scope_kind", json!(input.model_scope_kind));
    put("model_scope_key", json!(input.model_scope_key));
    put("model_ids", json!(input.model_ids));
    put("source", json!(window.source));
    put("source_observation_id", json!(window.source_observation_id));
    put("observed_at_ms", json!(window.observed_at_ms));
    put("boundary_accuracy", json!(input.boundary_accuracy));
    put("cycle_start_ms", json!(input.cycle_start_ms));
    put("cycle_end_ms", json!(input.cycle_end_ms));
    put("duration_seconds", json!(input.duration_seconds));
    put("used_percent", json!(input.used_percent));
    put("remaining_percent", json!(input.remaining_percent));
    put("used_value", json!(input.used_value));
    put("limit_value", json!(input.limit_value));
    put("quota_unit", json!(input.quota_unit));
    put(
        "reset_credits_available",
        json!(input.reset_credits_available),
    );
    if let Ok(credits) = serde_json::from_str::<Value>(&input.reset_credits_json) {
        put("reset_credits", credits);
    }
    put("plan_type", json!(input.plan_type));
    put("stale", json!(is_stale(window, now_ms)));
    put("logical_window_id", json!(window.logical_window_id));
    put("activation_generation", json!(window.generation));
    put("availability", json!(window.availability));
    put("relationship_kind", json!(input.relationship_kind));
    put(
        "container_provider_window_id",
        json!(input.container_provider_window_id),
    );
    put("first_seen_at_ms", json!(window.first_seen_at_ms));
    put("last_seen_at_ms", json!(window.last_seen_at_ms));
    put("missing_since_ms", json!(window.missing_since_ms));
    put("deactivated_at_ms", json!(window.deactivated_at_ms));
    let reliable = matches!(input.boundary_accuracy.as_str(), "exact" | "derived");
    if let (Some(start), Some(end)) = (input.cycle_start_ms, input.cycle_end_ms) {
        let open = end > now_ms && window.availability == "active";
        put(
            "current_cycle",
            json!({
                "id": window.logical_window_id * 1_000_000 + (start / 1000) % 1_000_000,
                "activation_id": window.generation,
                "state": if open { "open" } else { "closed" },
                "scheduled_start_ms": start,
                "scheduled_end_ms": end,
                "actual_start_ms": start,
                "duration_seconds": input.duration_seconds,
                "boundary_accuracy": input.boundary_accuracy,
                "forecast_eligible": reliable && open,
            }),
        );
    }
    if let Some((start, end, used)) = window.previous_cycle {
        put(
            "previous_cycle",
            json!({
                "id": window.logical_window_id * 1_000_000 + (end / 1000) % 1_000_000,
                "activation_id": window.generation,
                "state": "closed",
                "scheduled_start_ms": start,
                "scheduled_end_ms": end,
                "actual_start_ms": start.unwrap_or(end),
                "actual_end_ms": end,
                "boundary_accuracy": input.boundary_accuracy,
                "end_reason": "scheduled",
                "forecast_eligible": reliable,
                "used_percent": used,
            }),
        );
    }
    Value::Object(item)
}

/// A zero-usage Codex header placeholder (unknown mode, main window, used 0) says nothing.
fn placeholder(window: &StoredWindow) -> bool {
    window.source == "response_header"
        && window.input.window_mode == "unknown"
        && window.input.used_percent == Some(0.0)
}

fn duration_order(window: &StoredWindow) -> i64 {
    window.input.duration_seconds.unwrap_or(i64::MAX)
}

async fn query<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: QueryBody = decode(&body)?;
    check_count("accounts", body.accounts.len(), MAX_QUERY_ACCOUNTS)?;
    let now = body
        .now_ms
        .filter(|now| *now > 0)
        .unwrap_or_else(|| jiff::Timestamp::now().as_millisecond());
    let mut items = Vec::with_capacity(body.accounts.len());
    for account in &body.accounts {
        if account.row_key.trim().is_empty() {
            return Err(invalid("row_key is required"));
        }
        let provider = one_of(
            "provider",
            &normalize_provider(&account.provider),
            PROVIDERS,
        )?;
        let key = account
            .account
            .key(&provider)
            .ok_or_else(|| invalid("account identity is required"))?;
        let mut windows = state
            .store
            .account_windows(&key, &provider)
            .await
            .map_err(storage_failed)?;
        windows.retain(|window| {
            !placeholder(window) && (body.include_inactive || window.availability != "inactive")
        });
        windows.sort_by_key(duration_order);
        let windows: Vec<Value> = windows
            .iter()
            .map(|window| window_json(window, now))
            .collect();
        items.push(json!({
            "row_key": account.row_key,
            "account_key": key,
            "provider": provider,
            "windows": windows,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({"generated_at_ms": now, "items": items})))
}
