//! The JSON error envelope: `{"error": "<human message>", "code": "<stable_code>"}`.
//!
//! Codes are set explicitly at each error site (never derived from message text);
//! the panel and scripts switch on `code`, so codes and their messages are a
//! compatibility contract with the Go server.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// Stable machine codes, as existing clients know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 409: the CPA connection comes from environment variables and cannot be changed here.
    ConnectionEnvManaged,
    /// 409: an account-processing switch is set by an environment variable.
    AccountProcessingPolicyEnvLocked,
    /// 400: request monitoring was enabled without a CPA URL and management key.
    CpaConnectionRequiredForMonitoring,
    /// 400: a CPA URL and management key are required.
    CpaConnectionRequired,
    /// 409: setup is managed by environment variables.
    SetupEnvManaged,
    /// 401: changing a saved setup needs its current CPA management key.
    InvalidExistingManagementKey,
    /// 401: the admin key is missing or wrong.
    InvalidAdminKey,
    /// 428: setup is not finished yet (no CPA connection).
    UsageServiceNotConfigured,
    /// 400: CPA reports a usage-queue retention of 0 seconds or less.
    CpaUsageRetentionInvalid,
    /// 400: the poll interval is longer than CPA keeps queued events.
    PollIntervalExceedsRetention,
    /// 400: the time zone is not an IANA name or a fixed offset.
    InvalidTimeZone,
    /// CPA could not be reached, or did not accept the URL and management key.
    ManagementApiValidationFailed,
    /// CPA's usage settings could not be read from its management API.
    ManagementApiConfigFailed,
    /// CPA refused to turn usage statistics on.
    EnableCpaUsageStatisticsFailed,
    /// 400: a price write without prices.
    PricesRequired,
    /// 400: an alias write without aliases.
    ApiKeyAliasesRequired,
    /// 400: two aliases for the same API key.
    ApiKeyAliasDuplicate,
    /// A price source could not be fetched or read.
    ModelPriceSyncFailed,
    /// 405: the path exists but not with this method.
    MethodNotAllowed,
    /// 501: a Manager path whose feature this server does not serve.
    NotImplemented,
    /// 400: the import file could not be read.
    UsageImportInvalid,
    /// 413: the import is over the size limit.
    UsageImportTooLarge,
    /// 400: an import-session request is malformed.
    UsageImportSessionInvalidRequest,
    /// 404: no import session with this id.
    UsageImportSessionNotFound,
    /// 409: the upload conflicts with the session's state (offset, finished session).
    UsageImportSessionConflict,
    /// 413: the upload is over the session size limit.
    UsageImportSessionTooLarge,
    /// 507: import sessions would use more disk than allowed.
    UsageImportSessionQuotaExceeded,
    /// 429: too many open import sessions.
    UsageImportSessionLimitExceeded,
    /// 500: import sessions cannot be stored (disk error).
    UsageImportSessionUnavailable,
    /// A backup could not be written.
    BackupFailed,
    /// 409: another backup is running.
    BackupInProgress,
    /// 429: too many failed admin key attempts from this address.
    TooManyAttempts,
    /// 503: the server is busy (admin key checks or analytics computations); retry after
    /// `Retry-After`.
    ServerBusy,
    /// 503: the database cannot be used right now (locked, read-only, disk full, IO
    /// error); retry after `Retry-After`.
    DatabaseUnavailable,
    /// 400: the request is malformed; the message names the field.
    InvalidRequest,
    /// 404: nothing with this id or path.
    NotFound,
    /// The request could not be carried out in the current state (the message says why).
    RequestFailed,
}

impl ErrorCode {
    /// The code as it appears in the `code` member of the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ConnectionEnvManaged => "connection_env_managed",
            ErrorCode::AccountProcessingPolicyEnvLocked => "account_processing_policy_env_locked",
            ErrorCode::CpaConnectionRequiredForMonitoring => {
                "cpa_connection_required_for_monitoring"
            }
            ErrorCode::CpaConnectionRequired => "cpa_connection_required",
            ErrorCode::SetupEnvManaged => "setup_env_managed",
            ErrorCode::InvalidExistingManagementKey => "invalid_existing_management_key",
            ErrorCode::InvalidAdminKey => "invalid_admin_key",
            ErrorCode::UsageServiceNotConfigured => "usage_service_not_configured",
            ErrorCode::CpaUsageRetentionInvalid => "cpa_usage_retention_invalid",
            ErrorCode::PollIntervalExceedsRetention => "poll_interval_exceeds_retention",
            ErrorCode::InvalidTimeZone => "invalid_time_zone",
            ErrorCode::ManagementApiValidationFailed => "management_api_validation_failed",
            ErrorCode::ManagementApiConfigFailed => "management_api_config_failed",
            ErrorCode::EnableCpaUsageStatisticsFailed => "enable_cpa_usage_statistics_failed",
            ErrorCode::PricesRequired => "prices_required",
            ErrorCode::ApiKeyAliasesRequired => "api_key_aliases_required",
            ErrorCode::ApiKeyAliasDuplicate => "api_key_alias_duplicate",
            ErrorCode::ModelPriceSyncFailed => "model_price_sync_failed",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::UsageImportInvalid => "usage_import_invalid",
            ErrorCode::UsageImportTooLarge => "usage_import_too_large",
            ErrorCode::UsageImportSessionInvalidRequest => "usage_import_session_invalid_request",
            ErrorCode::UsageImportSessionNotFound => "usage_import_session_not_found",
            ErrorCode::UsageImportSessionConflict => "usage_import_session_conflict",
            ErrorCode::UsageImportSessionTooLarge => "usage_import_session_too_large",
            ErrorCode::UsageImportSessionQuotaExceeded => "usage_import_session_quota_exceeded",
            ErrorCode::UsageImportSessionLimitExceeded => "usage_import_session_limit_exceeded",
            ErrorCode::UsageImportSessionUnavailable => "usage_import_session_unavailable",
            ErrorCode::BackupFailed => "backup_failed",
            ErrorCode::BackupInProgress => "backup_in_progress",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RequestFailed => "request_failed",
        }
    }
}

/// The 428 message before setup is complete. It starts with the Go server's text
/// (clients match on it) and says what to do.
pub const NOT_CONFIGURED_MESSAGE: &str = "usage service is not configured: open /management.html and finish setup (CPA URL and CPA Management Key), then retry";

/// `Retry-After` of a `503 database_unavailable`.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// The stable code clients switch on.
    pub code: ErrorCode,
    /// A human message naming the fix; never secrets or internal details.
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limiting).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A 400 with this code and message.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The 405 `method_not_allowed` answer.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "method not allowed",
        )
    }

    /// A 401 `invalid_admin_key` with this message.
    pub fn invalid_admin_key(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidAdminKey,
            message,
        )
    }

    /// The 428 `usage_service_not_configured` answer before setup is complete.
    pub fn not_configured() -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            ErrorCode::UsageServiceNotConfigured,
            NOT_CONFIGURED_MESSAGE,
        )
    }

    /// An internal failure. The cause is logged in full; the client gets a
    /// short message without internal detail.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::RequestFailed,
            context.to_string(),
        )
    }
}

impl From<cpamp_domain::StoreError> for ApiError {
    fn from(error: cpamp_domain::StoreError) -> ApiError {
        match error {
            cpamp_domain::StoreError::Invalid(message) => {
                ApiError::bad_request(ErrorCode::InvalidRequest, message)
            }
            cpamp_domain::StoreError::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
            }
            cpamp_domain::StoreError::Unavailable { .. } => {
                tracing::error!(error = %error, "database unavailable");
                let mut answer = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::DatabaseUnavailable,
                    "the database cannot be used right now; retry later",
                );
                answer.retry_after_secs = Some(DATABASE_RETRY_AFTER_SECS);
                answer
            }
            other => ApiError::internal("database request failed", &other),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_secs {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.json(serde_json::json!({ "error": self.message, "code": self.code.as_str() }))
    }
}
