//! `GET /usage-service/info` (no auth, setup state for the panel) and
//! `GET|PUT /usage-service/config` (the saved connection and collector settings,
//! server-core §3.3 and §3.5).
//!
//! Deviations from the Go server, on purpose: the CPA Management Key is never returned
//! (`managementKey` is masked, `managementKeySet` says whether one is saved), PUT checks
//! the admin key before reading the body, reports the real `source`, never writes an
//! env-managed key to SQLite, and answers 502 for every failed CPA call.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use cpamp_domain::Secret;
use cpamp_domain::automation::inspection::{ConfigError, InspectionConfig};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{self, AdminAuth, AdminAuthenticator, AuthBackend};
use crate::connection::{self, ConnectionSource, CpaConnection, Resolution};
use crate::cpa_client;
use crate::error::{ApiError, ErrorCode};
use crate::manager_config::{self, ConfigSource, Update};
use crate::routes::setup::{check_cpa, decode_body};
use crate::state::{AppState, Store};

/// How long GET config waits for CPA's usage settings before leaving them out.
const USAGE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/usage-service/info")
                .route(web::get().to(info::<S>))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::method_not_allowed())
                })),
        )
        .service(
            web::resource("/usage-service/config")
                .route(web::get().to(get_config::<S>))
                .route(web::put().to(put_config::<S>))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::method_not_allowed())
                })),
        );
}

async fn info<S: Store>(state: web::Data<AppState<S>>) -> Result<HttpResponse, ApiError> {
    let admin_ready = state
        .store
        .get_setting(auth::CREDENTIAL_KEY)
        .await?
        .is_some();
    let effective = manager_config::load(&state).await?;
    let resolution = connection::resolution_of(&effective);
    let project_initialized = matches!(resolution, Resolution::Configured(_));
    let counts = state.store.counts().await?;
    // Only collected data counts as history (the Go server also counted its own
    // settings rows, which made every restart after setup report `migrated`).
    let has_history = counts.events > 0 || counts.dead_letters > 0;
    let status = match (project_initialized, has_history) {
        (false, false) => "fresh",
        (false, true) => "needs_setup",
        (true, false) => "ready",
        (true, true) => "migrated",
    };
    let mut body = json!({
        "service": "cpa-manager-plus",
        "mode": "embedded",
        "startedAt": state.started_at_ms,
        "configured": project_initialized,
        "adminReady": admin_ready,
        "projectInitialized": project_initialized,
        "setupRequired": admin_ready && !project_initialized,
        "migrationStatus": status,
        "dataKeyReady": !matches!(resolution, Resolution::NeedsReentry { .. }),
        "hasHistoricalData": has_history,
        "connectionSource": effective.source.as_str(),
        // The panel's System page shows it; the Go server had no such field.
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let Resolution::NeedsReentry { reason, .. } = &resolution {
        body["setupReason"] = json!(format!(
            "The saved CPA Management Key cannot be read ({reason}). This happens when data.key was lost or replaced. \
             Open /management.html and save the CPA connection again."
        ));
    }
    Ok(HttpResponse::Ok().json(body))
}

async fn get_config<S: Store>(
    request: HttpRequest,
    state: web::Data<AppState<S>>,
    authenticator: web::Data<AdminAuthenticator>,
) -> Result<HttpResponse, ApiError> {
    let effective = manager_config::load(&state).await?;
    let resolution = connection::resolution_of(&effective);
    // Before setup (no usable key) the page is open, so the panel can show the form.
    admin_once_configured(&request, &state, &authenticator, &resolution).await?;
    let mut body = json!({
        "config": effective.to_response(),
        "source": effective.source.as_str(),
    });
    if let Resolution::Configured(connection) = &resolution
        && let Ok(Ok(usage)) =
            tokio::time::timeout(USAGE_PROBE_TIMEOUT, cpa_client::usage_settings(connection)).await
    {
        body["cpaUsage"] = usage.to_json();
    }
    Ok(HttpResponse::Ok().json(body))
}

/// The admin key, required only once a CPA connection is set up: the reads the panel
/// needs to show its setup form stay open before that.
pub(crate) async fn admin_once_configured<S: Store>(
    request: &HttpRequest,
    state: &AppState<S>,
    authenticator: &AdminAuthenticator,
    resolution: &Resolution,
) -> Result<(), ApiError> {
    if let Resolution::Configured(_) = resolution {
        let backend: &dyn AuthBackend = state;
        auth::check_admin(
            authenticator,
            Some(backend),
            auth::client_address(request),
            auth::bearer_token(request).as_deref(),
        )
        .await?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct PutBody {
    config: PutConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PutConfig {
    cpa_connection: PutConnection,
    collector: PutCollector,
    codex_inspection: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PutConnection {
    cpa_base_url: String,
    management_key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct PutCollector {
    enabled: Option<bool>,
    collector_mode: String,
    queue: String,
    pop_side: String,
    batch_size: i64,
    poll_interval_ms: i64,
    query_limit: i64,
    tls_skip_verify: Option<bool>,
}

fn env_conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::ConnectionEnvManaged,
        "connection setup is managed by environment variables",
    )
}

async fn put_config<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: PutBody = decode_body(&body)?;
    let submitted = body.config;

    let _guard = state.config_lock.lock().await;
    let current = manager_config::load(&state).await?;
    // The inspection block is normalised onto what is saved (a bad time zone or target
    // type is a 400 naming it; the Go server answered 500 for the latter).
    let codex_inspection = match &submitted.codex_inspection {
        Some(codex) => Some(
            InspectionConfig::normalize(
                codex,
                &InspectionConfig::from_stored(&current.codex_inspection),
            )
            .map_err(|error| match error {
                ConfigError::TimeZone(..) => {
                    ApiError::bad_request(ErrorCode::InvalidTimeZone, error.to_string())
                }
                ConfigError::TargetTypes(_) => {
                    ApiError::bad_request(ErrorCode::RequestFailed, error.to_string())
                }
            })?
            .to_json(),
        ),
        None => None,
    };

    // Connection: replaced only when a URL or key is submitted. The masked key that GET
    // returns (or an empty key) means "keep the saved key".
    let submitted_url = connection::normalize_base_url(&submitted.cpa_connection.cpa_base_url);
    let submitted_key = submitted.cpa_connection.management_key.trim().to_string();
    let key_is_placeholder = submitted_key.is_empty()
        || (!current.management_key.is_empty() && submitted_key == current.management_key.masked());
    let connection_submitted = !submitted_url.is_empty() || !key_is_placeholder;
    let (base_url, key) = if connection_submitted {
        let url = if submitted_url.is_empty() {
            current.base_url.clone()
        } else {
            submitted_url
        };
        let key = if key_is_placeholder {
            current.management_key.clone()
        } else {
            Secret::new(submitted_key)
        };
        (url, key)
    } else {
        (current.base_url.clone(), current.management_key.clone())
    };
    let connection_changed = base_url != current.base_url
        || !auth::same_secret(key.expose(), current.management_key.expose())
        || (key.is_empty() != current.management_key.is_empty());

    let mut collector = current.collector.clone();
    if let Some(enabled) = submitted.collector.enabled {
        collector.enabled = enabled;
    }
    let values = &submitted.collector;
    if !values.collector_mode.trim().is_empty() {
        collector.mode = cpamp_collector::Mode::parse(&values.collector_mode);
    }
    if !values.queue.is_empty() {
        collector.queue = values.queue.clone();
    }
    if !values.pop_side.trim().is_empty() {
        collector.pop_side = cpamp_collector::PopSide::parse(&values.pop_side);
    }
    if let Some(size) = u32::try_from(values.batch_size)
        .ok()
        .filter(|size| *size > 0)
    {
        collector.batch_size = size;
    }
    if let Some(poll) = u64::try_from(values.poll_interval_ms)
        .ok()
        .filter(|poll| *poll > 0)
    {
        collector.poll_interval_ms = poll;
    }
    if values.query_limit > 0 {
        collector.query_limit = values.query_limit;
    }
    if let Some(skip) = values.tls_skip_verify {
        collector.tls_skip_verify = skip;
    }

    let env_managed = current.source == ConfigSource::Env;
    if env_managed {
        let mut locked = collector.clone();
        locked.query_limit = current.collector.query_limit;
        if connection_changed || locked != current.collector {
            return Err(env_conflict());
        }
    }

    if connection_submitted && (base_url.is_empty() || key.is_empty()) {
        return Err(ApiError::bad_request(
            ErrorCode::CpaConnectionRequired,
            "cpaBaseUrl and managementKey are required",
        ));
    }
    let connected = !base_url.is_empty() && !key.is_empty();
    if !connected && collector.enabled {
        return Err(ApiError::bad_request(
            ErrorCode::CpaConnectionRequiredForMonitoring,
            "cpaBaseUrl and managementKey are required when request monitoring is enabled",
        ));
    }
    // CPA is asked again only when something it has to confirm changed.
    let needs_check = connected
        && !env_managed
        && (connection_changed
            || (collector.enabled
                && (!current.collector.enabled
                    || collector.poll_interval_ms != current.collector.poll_interval_ms)));
    if needs_check {
        let candidate = CpaConnection {
            base_url: base_url.clone(),
            management_key: key.clone(),
            source: ConnectionSource::Db,
        };
        check_cpa(
            &candidate,
            collector.enabled,
            collector.poll_interval_ms,
            collector.enabled,
        )
        .await?;
    }

    manager_config::save(
        &state,
        Update {
            connection: (!env_managed && connected && connection_changed)
                .then(|| (base_url.clone(), key.clone())),
            collector: (!env_managed).then(|| collector.clone()),
            query_limit: env_managed.then_some(collector.query_limit),
            enabled: None,
            codex_inspection,
        },
        jiff::Timestamp::now().as_millisecond(),
    )
    .await?;
    connection::apply_collector(&state).await?;
    let saved = manager_config::load(&state).await?;
    Ok(HttpResponse::Ok().json(json!({
        "config": saved.to_response(),
        "source": saved.source.as_str(),
    })))
}
