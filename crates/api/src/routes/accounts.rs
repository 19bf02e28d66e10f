//! Per-credential monitoring endpoints:
//! `GET /v0/management/monitoring/header-snapshots`,
//! `POST /v0/management/monitoring/account-history` and
//! `POST /v0/management/monitoring/account-window-usage`.
//!
//! Handlers parse and validate; the numbers come from
//! `cpamp_domain::analytics::accounts`. Every bad input is a 400 with a code
//! (the Go server answered a bad period or model scope with 500). The two POST
//! bodies reject unknown target fields, as the Go server does, so a misspelt
//! credential field cannot silently widen a match.

use actix_web::{HttpRequest, HttpResponse, web};
use cpamp_domain::analytics::accounts::{
    AccountTarget, HistoryTarget, MAX_HISTORY_TARGETS, MAX_WINDOWS, ModelScope, Period,
    SNAPSHOT_DAYS, SNAPSHOT_LIMIT, UsageWindow, account_history, account_window_usage,
    header_snapshots,
};
use serde::Deserialize;

use super::analytics::{bad, json, now_ms, query_error, query_param};
use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::state::{AppState, Store};

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    // Each path answers with and without a trailing slash; other methods get 405
    // after auth, as in Go.
    let mut register = |path: &str, route: fn() -> actix_web::Route| {
        for path in [path.to_string(), format!("{path}/")] {
            config.service(web::resource(path).route(route()).default_service(web::to(
                |_auth: AdminAuth| async { Err::<HttpResponse, _>(ApiError::method_not_allowed()) },
            )));
        }
    };
    register("/v0/management/monitoring/header-snapshots", || {
        web::get().to(snapshots::<S>)
    });
    register("/v0/management/monitoring/account-history", || {
        web::post().to(history::<S>)
    });
    register("/v0/management/monitoring/account-window-usage", || {
        web::post().to(window_usage::<S>)
    });
}

/// A non-negative integer query parameter with a default and a maximum.
fn bounded(
    pairs: &[(String, String)],
    name: &str,
    (default, max): (i64, i64),
) -> Result<i64, ApiError> {
    let Some(text) = query_param(pairs, name)
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Ok(default);
    };
    match text.parse::<i64>() {
        Ok(value) if value >= 0 => Ok(if value == 0 { default } else { value.min(max) }),
        _ => Err(bad(format!(
            "{name} must be a non-negative integer (at most {max})"
        ))),
    }
}

async fn snapshots<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .map_err(|error| bad(format!("invalid query string: {error}")))?
        .into_inner();
    let days = bounded(&pairs, "days", SNAPSHOT_DAYS)?;
    let limit = bounded(&pairs, "limit", SNAPSHOT_LIMIT)?;
    let limit = usize::try_from(limit).unwrap_or(1000);
    let answer = header_snapshots(&state.store, now_ms(), days, limit)
        .await
        .map_err(query_error)?;
    json(&answer)
}

/// The credential fields shared by both POST bodies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    row_key: Option<String>,
    account_key: Option<String>,
    account_snapshot: Option<String>,
    auth_label_snapshot: Option<String>,
    auth_file_snapshot: Option<String>,
    auth_provider_snapshot: Option<String>,
    auth_project_id_snapshot: Option<String>,
    auth_index: Option<String>,
    source: Option<String>,
}

impl TargetBody {
    fn target(&self) -> AccountTarget {
        let text = |value: &Option<String>| value.as_deref().unwrap_or("").trim().to_string();
        AccountTarget {
            account_key: text(&self.account_key),
            account_snapshot: text(&self.account_snapshot),
            auth_label_snapshot: text(&self.auth_label_snapshot),
            auth_file_snapshot: text(&self.auth_file_snapshot),
            auth_provider_snapshot: text(&self.auth_provider_snapshot),
            auth_project_id_snapshot: text(&self.auth_project_id_snapshot),
            auth_index: text(&self.auth_index),
            source: text(&self.source),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    accounts: Option<Vec<TargetBody>>,
    #[allow(
        dead_code,
        reason = "catch-up has nothing to do: rollups commit with the events"
    )]
    catch_up: Option<bool>,
}

fn first_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
    match stream.next() {
        Some(Ok(body)) => Ok(body),
        Some(Err(error)) => Err(bad(error.to_string())),
        None => Err(bad("the request body is empty; send a JSON object")),
    }
}

async fn history<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: HistoryBody = first_value(&body)?;
    let accounts = body.accounts.unwrap_or_default();
    if accounts.is_empty() || accounts.len() > MAX_HISTORY_TARGETS {
        return Err(bad(format!(
            "accounts must hold 1 to {MAX_HISTORY_TARGETS} entries"
        )));
    }
    let mut targets: Vec<HistoryTarget> = Vec::with_capacity(accounts.len());
    for (index, entry) in accounts.iter().enumerate() {
        let row_key = entry.row_key.as_deref().unwrap_or("").trim().to_string();
        if row_key.is_empty() {
            return Err(bad(format!("accounts[{index}].row_key is required")));
        }
        if targets.iter().any(|t| t.row_key == row_key) {
            return Err(bad(format!(
                "accounts[{index}].row_key {row_key:?} is used twice; row keys must be unique"
            )));
        }
        let target = entry.target();
        target
            .validate(&format!("accounts[{index}]"))
            .map_err(|error| bad(error.to_string()))?;
        targets.push(HistoryTarget { row_key, target });
    }
    let answer = account_history(&state.store, now_ms(), &targets)
        .await
        .map_err(query_error)?;
    json(&answer)
}

#[derive(Debug, Default, Deserialize)]
struct ScopeBody {
    kind: Option<String>,
    key: Option<String>,
    models: Option<Vec<String>>,
    complete: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    request_key: Option<String>,
    row_key: Option<String>,
    window_key: Option<String>,
    provider_window_id: Option<String>,
    period: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    model_scope: Option<ScopeBody>,
    account_key: Option<String>,
    account_snapshot: Option<String>,
    auth_label_snapshot: Option<String>,
    auth_file_snapshot: Option<String>,
    auth_provider_snapshot: Option<String>,
    auth_project_id_snapshot: Option<String>,
    auth_index: Option<String>,
    source: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WindowsBody {
    windows: Option<Vec<WindowBody>>,
}

fn window(index: usize, body: WindowBody) -> Result<UsageWindow, ApiError> {
    let text = |value: Option<String>| value.unwrap_or_default().trim().to_string();
    let at = |field: &str| format!("windows[{index}].{field}");
    let row_key = text(body.row_key);
    if row_key.is_empty() {
        return Err(bad(format!("{} is required", at("row_key"))));
    }
    let window_key = text(body.window_key);
    let mut provider_window_id = text(body.provider_window_id);
    if provider_window_id.is_empty() {
        provider_window_id = window_key.clone();
    }
    if provider_window_id.is_empty() {
        return Err(bad(format!(
            "{} is required (or set window_key)",
            at("provider_window_id")
        )));
    }
    let (from_ms, to_ms) = match (body.from_ms, body.to_ms) {
        (Some(from), Some(to)) if from < to => (from, to),
        _ => {
            return Err(bad(format!(
                "{} and {} are required and from_ms must be less than to_ms",
                at("from_ms"),
                at("to_ms")
            )));
        }
    };
    let period = Period::parse(body.period.as_deref().unwrap_or(""))
        .map_err(|error| bad(format!("windows[{index}]: {error}")))?;
    let scope = match body.model_scope {
        None => ModelScope::all(),
        Some(scope) => ModelScope::parse(
            scope.kind.as_deref().unwrap_or(""),
            scope.key.as_deref().unwrap_or(""),
            &scope.models.unwrap_or_default(),
            scope.complete,
        )
        .map_err(|error| bad(format!("windows[{index}]: {error}")))?,
    };
    let target = AccountTarget {
        account_key: text(body.account_key),
        account_snapshot: text(body.account_snapshot),
        auth_label_snapshot: text(body.auth_label_snapshot),
        auth_file_snapshot: text(body.auth_file_snapshot),
        auth_provider_snapshot: text(body.auth_provider_snapshot),
        auth_project_id_snapshot: text(body.auth_project_id_snapshot),
        auth_index: text(body.auth_index),
        source: text(body.source),
    };
    target
        .validate(&format!("windows[{index}]"))
        .map_err(|error| bad(error.to_string()))?;
    let mut request_key = text(body.request_key);
    if request_key.is_empty() {
        request_key = format!(
            "{row_key}\u{0}{provider_window_id}\u{0}{}\u{0}{}",
            scope.key,
            match period {
                Period::Current => "current",
                Period::Previous => "previous",
                Period::PreviousEqualRange => "previous_equal_range",
            }
        );
    }
    Ok(UsageWindow {
        request_key,
        row_key,
        window_key,
        provider_window_id,
        period,
        from_ms,
        to_ms,
        scope,
        target,
    })
}

async fn window_usage<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: WindowsBody = first_value(&body)?;
    let bodies = body.windows.unwrap_or_default();
    if bodies.is_empty() || bodies.len() > MAX_WINDOWS {
        return Err(bad(format!("windows must hold 1 to {MAX_WINDOWS} entries")));
    }
    let windows = bodies
        .into_iter()
        .enumerate()
        .map(|(index, body)| window(index, body))
        .collect::<Result<Vec<_>, _>>()?;
    let answer = account_window_usage(&state.store, now_ms(), &windows)
        .await
        .map_err(query_error)?;
    json(&answer)
}
