//! Server inspection endpoints (automation spec §5.1), under
//! `/v0/management/codex-inspection`: `POST run`, `GET runs?limit=`, `GET runs/{id}`,
//! `POST runs/{id}/cancel`, `POST runs/{id}/actions`.
//!
//! Deviations from the Go server, on purpose: "not configured" is `428` like every other
//! endpoint (Go: 412, same code), and a `limit` above 200 is clamped to 200 (Go: 50).

use actix_web::{HttpRequest, HttpResponse, web};
use cpamp_domain::automation::runs::{Run, RunLog, RunResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::AdminAuth;
use crate::automation::inspection;
use crate::error::{ApiError, ErrorCode};
use crate::state::{AppState, Store};

const RUNS_LIMIT: u32 = 200;

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    let not_allowed =
        || web::to(|| async { Err::<HttpResponse, _>(ApiError::method_not_allowed()) });
    for path in [
        "/v0/management/codex-inspection/run",
        "/v0/management/codex-inspection/runs",
        "/v0/management/codex-inspection/runs/{id}",
        "/v0/management/codex-inspection/runs/{id}/cancel",
        "/v0/management/codex-inspection/runs/{id}/actions",
    ] {
        // The trailing-slash spelling is the same operation.
        for spelling in [path.to_string(), format!("{path}/")] {
            let resource = web::resource(spelling).default_service(not_allowed());
            let resource = match path.rsplit('/').next().unwrap_or_default() {
                "run" => resource.route(web::post().to(start::<S>)),
                "runs" => resource.route(web::get().to(list::<S>)),
                "{id}" => resource.route(web::get().to(get::<S>)),
                "cancel" => resource.route(web::post().to(cancel::<S>)),
                _ => resource.route(web::post().to(actions::<S>)),
            };
            config.service(resource);
        }
    }
}

fn bad_id() -> ApiError {
    ApiError::bad_request(
        ErrorCode::RequestFailed,
        "codex inspection run id is invalid",
    )
}

fn run_id(request: &HttpRequest) -> Result<i64, ApiError> {
    request
        .match_info()
        .get("id")
        .and_then(|id| id.trim().parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(bad_id)
}

async fn start<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let run = inspection::start(&state, "manual", "").await?;
    detail(&state, run).await
}

async fn list<S: Store>(
    _admin: AdminAuth,
    request: HttpRequest,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let limit =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .ok()
            .and_then(|query| {
                query
                    .get("limit")
                    .and_then(|limit| limit.trim().parse::<u32>().ok())
            })
            .filter(|limit| *limit > 0)
            .unwrap_or(20)
            .min(RUNS_LIMIT);
    let runs = state.store.runs(limit).await?;
    let lease = state.store.lease().await?;
    let items: Vec<Value> = runs
        .iter()
        .map(|run| run_json(&state, run, lease.as_ref()))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

async fn get<S: Store>(
    _admin: AdminAuth,
    request: HttpRequest,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&request)?;
    let run = state.store.run(id).await?.ok_or_else(not_found)?;
    detail(&state, run).await
}

async fn cancel<S: Store>(
    _admin: AdminAuth,
    request: HttpRequest,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let run = inspection::cancel(&state, run_id(&request)?).await?;
    detail(&state, run).await
}

async fn actions<S: Store>(
    _admin: AdminAuth,
    request: HttpRequest,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = run_id(&request)?;
    let request: ActionsRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(ErrorCode::RequestFailed, format!("invalid body: {error}"))
    })?;
    let mut overrides = Vec::new();
    for entry in &request.action_overrides {
        if entry.action != "delete" || entry.result_id <= 0 {
            return Err(ApiError::bad_request(
                ErrorCode::RequestFailed,
                "codex inspection action override is invalid",
            ));
        }
        overrides.push(entry.result_id);
    }
    let outcomes = inspection::manual_actions(&state, id, &request.result_ids, &overrides).await?;
    let run = state.store.run(id).await?.ok_or_else(not_found)?;
    let detail = detail_json(&state, run).await?;
    Ok(HttpResponse::Ok().json(json!({ "outcomes": outcomes, "detail": detail })))
}

fn not_found() -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "codex inspection run not found",
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionsRequest {
    #[serde(default)]
    result_ids: Vec<i64>,
    #[serde(default)]
    action_overrides: Vec<ActionOverride>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionOverride {
    #[serde(default)]
    result_id: i64,
    #[serde(default)]
    action: String,
}

async fn detail<S: Store>(state: &AppState<S>, run: Run) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(detail_json(state, run).await?))
}

async fn detail_json<S: Store>(state: &AppState<S>, run: Run) -> Result<Value, ApiError> {
    let lease = state.store.lease().await?;
    let results = state.store.results(run.id).await?;
    let logs = state.store.logs(run.id).await?;
    Ok(json!({
        "run": run_json(state, &run, lease.as_ref()),
        "results": results.iter().map(result_json).collect::<Vec<_>>(),
        "logs": logs.iter().map(log_json).collect::<Vec<_>>(),
    }))
}

fn run_json<S: Store>(
    state: &AppState<S>,
    run: &Run,
    lease: Option<&cpamp_domain::automation::runs::Lease>,
) -> Value {
    let now = jiff::Timestamp::now().as_millisecond();
    let active = run.is_active()
        && lease.is_some_and(|lease| lease.run_id == run.id && lease.lease_expires_at_ms > now);
    let cancellable =
        active && run.status == "running" && state.automation.inspector.running() == Some(run.id);
    let counts = &run.counts;
    let mut item = Map::new();
    item.insert("id".into(), json!(run.id));
    item.insert("triggerType".into(), json!(run.trigger_type));
    if !run.trigger_key.is_empty() {
        item.insert("triggerKey".into(), json!(run.trigger_key));
    }
    item.insert("status".into(), json!(run.status));
    item.insert("startedAtMs".into(), json!(run.started_at_ms));
    if let Some(at) = run.finished_at_ms {
        item.insert("finishedAtMs".into(), json!(at));
    }
    for (key, value) in [
        ("totalFiles", counts.total_files),
        ("probeSetCount", counts.probe_set_count),
        ("sampledCount", counts.sampled_count),
        ("disabledCount", counts.disabled_count),
        ("enabledCount", counts.enabled_count),
        ("deleteCount", counts.delete_count),
        ("disableCount", counts.disable_count),
        ("enableCount", counts.enable_count),
        ("reauthCount", counts.reauth_count),
        ("keepCount", counts.keep_count),
    ] {
        item.insert(key.into(), json!(value));
    }
    if !run.error.is_empty() {
        item.insert("error".into(), json!(run.error));
    }
    item.insert(
        "settings".into(),
        serde_json::from_str(&run.settings_json).unwrap_or_else(|_| json!({})),
    );
    item.insert("createdAtMs".into(), json!(run.created_at_ms));
    item.insert("updatedAtMs".into(), json!(run.updated_at_ms));
    item.insert("active".into(), json!(active));
    item.insert("cancellable".into(), json!(cancellable));
    Value::Object(item)
}

fn result_json(result: &RunResult) -> Value {
    let mut item = Map::new();
    let mut text = |key: &str, value: &str, always: bool| {
        if always || !value.is_empty() {
            item.insert(key.into(), json!(value));
        }
    };
    text("accountKey", &result.account_key, true);
    text("fileName", &result.file_name, true);
    text("displayAccount", &result.display_account, true);
    text("accountSnapshot", &result.account_snapshot, false);
    text("authIndex", &result.auth_index, false);
    text("accountId", &result.account_id, false);
    text("provider", &result.provider, true);
    text("status", &result.status, false);
    text("state", &result.state, false);
    text("action", &result.action, true);
    text("actionReason", &result.action_reason, true);
    text("actionStatus", &result.action_status, false);
    text("executedAction", &result.executed_action, false);
    text("actionError", &result.action_error, false);
    text("error", &result.error, false);
    text("planType", &result.plan_type, false);
    text("errorKind", &result.error_kind, false);
    text("errorDetail", &result.error_detail, false);
    item.insert("id".into(), json!(result.id));
    item.insert("runId".into(), json!(result.run_id));
    item.insert("disabled".into(), json!(result.disabled));
    if let Some(code) = result.status_code {
        item.insert("statusCode".into(), json!(code));
    }
    if let Some(used) = result.used_percent {
        item.insert("usedPercent".into(), json!(used));
    }
    item.insert("isQuota".into(), json!(result.is_quota));
    item.insert(
        "autoRecoverEligible".into(),
        json!(result.auto_recover_eligible),
    );
    if let Ok(Value::Array(windows)) = serde_json::from_str::<Value>(&result.quota_windows_json)
        && !windows.is_empty()
    {
        item.insert("quotaWindows".into(), Value::Array(windows));
    }
    item.insert(
        "quotaInventoryObserved".into(),
        json!(result.quota_inventory_observed),
    );
    item.insert("createdAtMs".into(), json!(result.created_at_ms));
    Value::Object(item)
}

fn log_json(log: &RunLog) -> Value {
    let mut item = json!({
        "id": log.id,
        "runId": log.run_id,
        "level": log.level,
        "message": log.message,
        "createdAtMs": log.created_at_ms,
    });
    if let (Ok(detail), Some(object)) = (
        serde_json::from_str::<Value>(&log.detail),
        item.as_object_mut(),
    ) {
        object.insert("detail".into(), detail);
    }
    item
}
