//! `POST /setup`: connect this server to CPA (server-core §3.4).
//!
//! Order: method (405), admin key (401, before the body is read), body (400), required
//! fields, env-managed conflict (409), existing-key check (401), then the CPA calls:
//! A validates URL and key, B reads CPA's queue retention (the poll interval must fit
//! in it), C turns CPA's usage publishing on. Only then is anything saved, and the
//! collector restarted.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use cpamp_domain::Secret;
use serde::Deserialize;
use serde_json::json;

use crate::auth::AdminAuth;
use crate::connection::{self, ConnectionSource, CpaConnection, Resolution};
use crate::cpa_client::{self, CallError};
use crate::error::{ApiError, ErrorCode};
use crate::manager_config::{self, CollectorValues, Update};
use crate::state::{AppState, Store};

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/setup")
            .route(web::post().to(setup::<S>))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::method_not_allowed())
            })),
    );
}

/// The setup request. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetupBody {
    #[serde(default)]
    cpa_base_url: String,
    #[serde(default)]
    cpa_management_key: String,
    #[serde(default)]
    management_key: String,
    #[serde(default)]
    collector_mode: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    pop_side: String,
    #[serde(default)]
    batch_size: i64,
    #[serde(default)]
    poll_interval_ms: i64,
    #[serde(default)]
    query_limit: i64,
    #[serde(default)]
    tls_skip_verify: bool,
    #[serde(default)]
    ensure_usage_statistics_enabled: Option<bool>,
    #[serde(default)]
    request_monitoring_enabled: Option<bool>,
}

/// Decodes a JSON body; a parse error is a 400 with the parser's text.
pub(crate) fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(ErrorCode::RequestFailed, error.to_string()))
}

async fn setup<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: SetupBody = decode_body(&body)?;
    let base_url = connection::normalize_base_url(&body.cpa_base_url);
    let key = match body.cpa_management_key.trim() {
        "" => body.management_key.trim().to_string(),
        key => key.to_string(),
    };
    if base_url.is_empty() || key.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::CpaConnectionRequired,
            "cpaBaseUrl and managementKey are required",
        ));
    }
    let startup = manager_config::startup_collector(&state);
    let monitoring = body.request_monitoring_enabled.unwrap_or(true);
    let ensure_stats = monitoring && body.ensure_usage_statistics_enabled.unwrap_or(monitoring);
    let collector = CollectorValues {
        enabled: monitoring,
        // Unlike the Go server, an omitted mode means USAGE_COLLECTOR_MODE, not `auto`.
        mode: match body.collector_mode.trim() {
            "" => startup.mode,
            mode => cpamp_collector::Mode::parse(mode),
        },
        queue: if body.queue.is_empty() {
            startup.queue.clone()
        } else {
            body.queue.clone()
        },
        pop_side: match body.pop_side.trim().to_ascii_lowercase().as_str() {
            "left" => cpamp_collector::PopSide::Left,
            "right" => cpamp_collector::PopSide::Right,
            _ => startup.pop_side,
        },
        batch_size: u32::try_from(body.batch_size)
            .ok()
            .filter(|size| *size > 0)
            .unwrap_or(startup.batch_size),
        poll_interval_ms: u64::try_from(body.poll_interval_ms)
            .ok()
            .filter(|poll| *poll > 0)
            .unwrap_or(startup.poll_interval_ms),
        query_limit: Some(body.query_limit)
            .filter(|limit| *limit > 0)
            .unwrap_or(startup.query_limit),
        tls_skip_verify: body.tls_skip_verify,
    };

    let _guard = state.config_lock.lock().await;
    let current = manager_config::load(&state).await?;
    let resolution = connection::resolution_of(&current);
    if let Resolution::Configured(existing) = &resolution {
        if existing.source == ConnectionSource::Env {
            if existing.base_url != base_url
                || !crate::auth::same_secret(&key, existing.management_key.expose())
                || collector.queue != startup.queue
                || collector.pop_side != startup.pop_side
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::SetupEnvManaged,
                    "setup is managed by environment variables",
                ));
            }
        } else if !crate::auth::same_secret(&key, existing.management_key.expose())
            && existing.base_url != base_url
        {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidExistingManagementKey,
                "invalid management key for existing setup",
            ));
        }
    }

    let candidate = CpaConnection {
        base_url: base_url.clone(),
        management_key: Secret::new(key.clone()),
        source: ConnectionSource::Db,
    };
    check_cpa(
        &candidate,
        monitoring,
        collector.poll_interval_ms,
        ensure_stats,
    )
    .await?;

    let env_managed = matches!(&resolution, Resolution::Configured(existing) if existing.source == ConnectionSource::Env);
    manager_config::save(
        &state,
        Update {
            // The env-managed key is never written to SQLite.
            connection: (!env_managed).then(|| (base_url.clone(), Secret::new(key))),
            collector: (!env_managed).then(|| collector.clone()),
            query_limit: env_managed.then_some(collector.query_limit),
            enabled: env_managed.then_some(monitoring),
            codex_inspection: None,
        },
        jiff::Timestamp::now().as_millisecond(),
    )
    .await?;
    connection::apply_collector(&state).await?;
    tracing::info!(upstream = %base_url, monitoring, "setup saved the CPA connection");
    Ok(HttpResponse::Ok().json(json!({"ok": true, "upstream": base_url})))
}

/// Calls A, B and C as the settings require; every failure of a CPA call is a 502.
pub(crate) async fn check_cpa(
    connection: &CpaConnection,
    monitoring: bool,
    poll_interval_ms: u64,
    ensure_stats: bool,
) -> Result<Option<cpa_client::CpaUsage>, ApiError> {
    cpa_client::validate(connection).await.map_err(|error| {
        call_error(
            error,
            ErrorCode::ManagementApiValidationFailed,
            "management API validation failed",
        )
    })?;
    let mut usage = None;
    if monitoring {
        let reported = cpa_client::usage_settings(connection)
            .await
            .map_err(|error| {
                call_error(
                    error,
                    ErrorCode::ManagementApiConfigFailed,
                    "management API config request failed",
                )
            })?;
        check_retention(reported.retention_seconds, poll_interval_ms)?;
        usage = Some(reported);
    }
    if ensure_stats {
        cpa_client::enable_usage_statistics(connection)
            .await
            .map_err(|error| {
                call_error(
                    error,
                    ErrorCode::EnableCpaUsageStatisticsFailed,
                    "enable CPA usage statistics failed",
                )
            })?;
    }
    Ok(usage)
}

/// CPA forgets events after its retention, so polling less often than that loses them.
pub(crate) fn check_retention(
    retention_seconds: i64,
    poll_interval_ms: u64,
) -> Result<(), ApiError> {
    if retention_seconds <= 0 {
        return Err(ApiError::bad_request(
            ErrorCode::CpaUsageRetentionInvalid,
            "CPA redis-usage-queue-retention-seconds must be greater than 0",
        ));
    }
    let limit_ms = u64::try_from(retention_seconds)
        .unwrap_or(u64::MAX)
        .saturating_mul(1000);
    if poll_interval_ms > limit_ms {
        return Err(ApiError::bad_request(
            ErrorCode::PollIntervalExceedsRetention,
            format!(
                "pollIntervalMs must be less than or equal to CPA redis-usage-queue-retention-seconds ({retention_seconds} seconds)"
            ),
        ));
    }
    Ok(())
}

fn call_error(error: CallError, code: ErrorCode, prefix: &str) -> ApiError {
    match error {
        CallError::Status(line) => {
            ApiError::new(StatusCode::BAD_GATEWAY, code, format!("{prefix}: {line}"))
        }
        CallError::Transport(text) | CallError::Body(text) => {
            ApiError::new(StatusCode::BAD_GATEWAY, ErrorCode::RequestFailed, text)
        }
    }
}
