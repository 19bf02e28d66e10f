//! Account automation endpoints (automation spec §3.6, §4.1, §4.2):
//! - `GET|PATCH /usage-service/account-processing-policy`: the three switches;
//! - `GET /usage-service/quota-cooldowns`: credentials disabled until their quota resets;
//! - `GET /v0/management/account-action-candidates` and the manual actions
//!   `POST …/{id}/ignore|resolve|enable`, `DELETE …/{id}/auth-file`;
//! - `GET /usage-service/automation-audit` (cpamp's own): the audit log of automatic
//!   account changes, newest first.
//!
//! Deviations from the Go server, on purpose: a candidate list `limit` above 500 is
//! clamped to 500 (Go replaced it with 100), and a CPA failure during a manual action is
//! 502 (Go: 500).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use cpamp_domain::automation::cooldown::XAI_FREE_USAGE_CODE;
use cpamp_domain::automation::store::{AuditQuery, Candidate, Cooldown};
use serde_json::{Map, Value, json};

use crate::auth::{AdminAuth, AdminAuthenticator};
use crate::automation::actions::{ManualAction, manual};
use crate::automation::policy;
use crate::connection;
use crate::error::{ApiError, ErrorCode};
use crate::manager_config;
use crate::state::{AppState, Store};

/// Most candidates one list returns.
const CANDIDATE_LIMIT: u32 = 500;
/// Most audit entries one page returns.
const AUDIT_LIMIT: u32 = 1000;

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    let not_allowed =
        || web::to(|| async { Err::<HttpResponse, _>(ApiError::method_not_allowed()) });
    config
        .service(
            web::resource("/usage-service/account-processing-policy")
                .route(web::get().to(get_policy::<S>))
                .route(web::patch().to(patch_policy::<S>))
                .default_service(not_allowed()),
        )
        .service(
            web::resource("/usage-service/quota-cooldowns")
                .route(web::get().to(quota_cooldowns::<S>))
                .default_service(not_allowed()),
        )
        .service(
            web::resource("/usage-service/automation-audit")
                .route(web::get().to(audit::<S>))
                .default_service(not_allowed()),
        );
    for path in [
        "/v0/management/account-action-candidates",
        "/v0/management/account-action-candidates/",
    ] {
        config.service(
            web::resource(path)
                .route(web::get().to(list_candidates::<S>))
                .default_service(not_allowed()),
        );
    }
    for (path, action) in [
        (
            "/v0/management/account-action-candidates/{id}/ignore",
            ManualAction::Ignore,
        ),
        (
            "/v0/management/account-action-candidates/{id}/resolve",
            ManualAction::Resolve,
        ),
        (
            "/v0/management/account-action-candidates/{id}/enable",
            ManualAction::Enable,
        ),
        (
            "/v0/management/account-action-candidates/{id}/auth-file",
            ManualAction::DeleteAuthFile,
        ),
    ] {
        let method = if action == ManualAction::DeleteAuthFile {
            actix_web::http::Method::DELETE
        } else {
            actix_web::http::Method::POST
        };
        for path in [path.to_string(), format!("{path}/")] {
            config.service(
                web::resource(path)
                    .app_data(web::Data::new(action))
                    .route(web::method(method.clone()).to(candidate_action::<S>))
                    .default_service(not_allowed()),
            );
        }
    }
}

async fn get_policy<S: Store>(
    request: HttpRequest,
    state: web::Data<AppState<S>>,
    authenticator: web::Data<AdminAuthenticator>,
) -> Result<HttpResponse, ApiError> {
    // Like the config page: open before setup, so the panel can show it.
    let effective = manager_config::load(&state).await?;
    let resolution = connection::resolution_of(&effective);
    super::service::admin_once_configured(&request, &state, &authenticator, &resolution).await?;
    let saved = policy::load_overrides(&state.store).await?;
    let view = policy::resolve(&state.startup.automation, &saved);
    Ok(HttpResponse::Ok().json(view.to_json()))
}

async fn patch_policy<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let patch: policy::Patch = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(
            ErrorCode::RequestFailed,
            format!("invalid account processing policy: {error}"),
        )
    })?;
    // Two saves never interleave.
    let _guard = state.config_lock.lock().await;
    let saved = policy::load_overrides(&state.store).await?;
    let merged = policy::merge(
        &state.startup.automation,
        saved,
        &patch,
        jiff::Timestamp::now().as_millisecond(),
    )?;
    let text = serde_json::to_string(&merged).map_err(|error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::RequestFailed,
            error.to_string(),
        )
    })?;
    state.store.put_setting(policy::SETTINGS_KEY, &text).await?;
    let view = policy::resolve(&state.startup.automation, &merged);
    state.automation.switches.apply(&view);
    tracing::info!(
        quota_cooldown = view.quota_cooldown.configured,
        queue = view.queue.configured,
        auto_disable = view.auto_disable.configured,
        "account processing policy saved"
    );
    Ok(HttpResponse::Ok().json(view.to_json()))
}

fn cooldown_json(cooldown: &Cooldown) -> Value {
    let mut item = Map::new();
    item.insert("authFileName".into(), json!(cooldown.auth_file_name));
    item.insert("authIndex".into(), json!(cooldown.auth_index));
    if !cooldown.account_snapshot.is_empty() {
        item.insert("accountSnapshot".into(), json!(cooldown.account_snapshot));
    }
    item.insert("provider".into(), json!(cooldown.provider));
    item.insert("owner".into(), json!(cooldown.owner));
    if !cooldown.reason_code.is_empty() {
        item.insert("reasonCode".into(), json!(cooldown.reason_code));
    }
    if !cooldown.window_kind.is_empty() {
        item.insert("windowKind".into(), json!(cooldown.window_kind));
    }
    // Only valid xAI free-usage evidence is shown, with the row's recovery time.
    if let Ok(Value::Object(mut evidence)) = serde_json::from_str::<Value>(&cooldown.evidence_json)
        && evidence.get("provider").and_then(Value::as_str) == Some("xai")
        && evidence.get("code").and_then(Value::as_str) == Some(XAI_FREE_USAGE_CODE)
    {
        if evidence.get("recover_at_ms").and_then(Value::as_i64) != Some(cooldown.recover_at_ms) {
            evidence.remove("recover_at_ms");
        }
        item.insert("evidence".into(), Value::Object(evidence));
    }
    item.insert("recoverAtMs".into(), json!(cooldown.recover_at_ms));
    item.insert("disabledAtMs".into(), json!(cooldown.disabled_at_ms));
    item.insert("createdAtMs".into(), json!(cooldown.created_at_ms));
    Value::Object(item)
}

async fn quota_cooldowns<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let items: Vec<Value> = state
        .store
        .active_cooldowns()
        .await?
        .iter()
        .map(cooldown_json)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

fn candidate_json(candidate: &Candidate) -> Value {
    let mut item = Map::new();
    let mut text = |key: &str, value: &str, always: bool| {
        if always || !value.is_empty() {
            item.insert(key.into(), json!(value));
        }
    };
    text("actionType", &candidate.action_type, true);
    text("status", &candidate.status, true);
    text("provider", &candidate.provider, false);
    text("authFileName", &candidate.auth_file_name, true);
    text("authIndex", &candidate.auth_index, false);
    text("accountSnapshot", &candidate.account_snapshot, false);
    text("accountIdSnapshot", &candidate.account_id_snapshot, false);
    text("authLabel", &candidate.auth_label, false);
    text("reasonCode", &candidate.reason_code, false);
    text("reason", &candidate.reason, true);
    text("lastError", &candidate.last_error, false);
    item.insert("id".into(), json!(candidate.id));
    item.insert(
        "autoDisableEligible".into(),
        json!(candidate.auto_disable_eligible),
    );
    if let Some(at) = candidate.auto_disabled_at_ms {
        item.insert("autoDisabledAtMs".into(), json!(at));
    }
    if let Ok(evidence @ Value::Object(_)) = serde_json::from_str::<Value>(&candidate.evidence_json)
    {
        item.insert("evidence".into(), evidence);
    }
    item.insert("firstSeenAtMs".into(), json!(candidate.first_seen_at_ms));
    item.insert("lastSeenAtMs".into(), json!(candidate.last_seen_at_ms));
    item.insert("hitCount".into(), json!(candidate.hit_count));
    item.insert("createdAtMs".into(), json!(candidate.created_at_ms));
    item.insert("updatedAtMs".into(), json!(candidate.updated_at_ms));
    Value::Object(item)
}

fn query_param(request: &HttpRequest, name: &str) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
        .ok()
        .and_then(|query| query.get(name).cloned())
}

async fn list_candidates<S: Store>(
    _admin: AdminAuth,
    request: HttpRequest,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let status = query_param(&request, "status")
        .map(|status| status.trim().to_string())
        .filter(|status| !status.is_empty());
    let limit = query_param(&request, "limit")
        .and_then(|limit| limit.trim().parse::<u32>().ok())
        .filter(|limit| *limit > 0)
        .unwrap_or(100)
        .min(CANDIDATE_LIMIT);
    let (items, pending) = state.store.candidates(status.as_deref(), limit).await?;
    let items: Vec<Value> = items.iter().map(candidate_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "pendingCount": pending })))
}

async fn candidate_action<S: Store>(
    _admin: AdminAuth,
    request: HttpRequest,
    state: web::Data<AppState<S>>,
    action: web::Data<ManualAction>,
) -> Result<HttpResponse, ApiError> {
    let id = request
        .match_info()
        .get("id")
        .and_then(|id| id.trim().parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(ErrorCode::RequestFailed, "candidate id is required")
        })?;
    let candidate = manual(&state, id, **action).await?;
    Ok(HttpResponse::Ok().json(json!({ "item": candidate_json(&candidate) })))
}

async fn audit<S: Store>(
    _admin: AdminAuth,
    request: HttpRequest,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        match query_param(&request, name) {
            None => Ok(None),
            Some(text) => text.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(
                    ErrorCode::RequestFailed,
                    format!("{name} must be an integer; got {text:?}"),
                )
            }),
        }
    };
    let limit = number("limit")?
        .filter(|limit| *limit > 0)
        .map_or(200, |limit| u32::try_from(limit).unwrap_or(AUDIT_LIMIT))
        .min(AUDIT_LIMIT);
    let query = AuditQuery {
        since_ms: number("since_ms")?,
        actor: query_param(&request, "actor").filter(|actor| !actor.is_empty()),
        auth_file_name: query_param(&request, "auth_file").filter(|file| !file.is_empty()),
        before_id: number("before_id")?,
        limit,
    };
    let entries = state.store.audit_entries(query).await?;
    let items: Vec<Value> = entries
        .iter()
        .map(|entry| {
            json!({
                "id": entry.id,
                "atMs": entry.at_ms,
                "actor": entry.actor,
                "action": entry.action,
                "authFileName": entry.auth_file_name,
                "authIndex": entry.auth_index,
                "provider": entry.provider,
                "account": entry.account,
                "reason": entry.reason,
                "outcome": entry.outcome,
                "detail": entry.detail,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}
