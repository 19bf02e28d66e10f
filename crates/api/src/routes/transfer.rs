//! Moving usage history: `GET /v0/management/usage/export`,
//! `POST /v0/management/usage/import`, the resumable
//! `/v0/management/usage/import-sessions*` and the backups under
//! `/usage-service/backups*`. Shapes and codes: `docs/transfer.md`.

use std::io::BufReader;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{
    CONTENT_DISPOSITION, CONTENT_LENGTH, ContentDisposition, DispositionParam, DispositionType,
};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use cpamp_domain::ports::{EventSelection, ExportChunks};
use cpamp_domain::transfer::export::ExportFormat;
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorCode};
use crate::state::{AppState, Store};
use crate::transfer::Transfer;
use crate::transfer::backup::{self, BackupError};
use crate::transfer::import::{
    ChannelReader, ImportFailure, ImportProgress, ImportResult, run_import,
};
use crate::transfer::sessions::{SessionError, SessionErrorKind};

/// Largest body of `POST /usage/import` (larger files go through import sessions).
pub const IMPORT_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest body of `POST /usage/import-sessions`.
const SESSION_CREATE_LIMIT_BYTES: usize = 64 * 1024;
/// Response header with the number of events an export holds.
pub const EXPORT_EVENTS_HEADER: &str = "X-Usage-Export-Events";

const SESSIONS: &str = "/v0/management/usage/import-sessions";

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    let not_allowed = || {
        web::to(|_auth: AdminAuth| async { Err::<HttpResponse, _>(ApiError::method_not_allowed()) })
    };
    for path in [
        "/v0/management/usage/export",
        "/v0/management/usage/export/",
    ] {
        config.service(
            web::resource(path)
                .route(web::get().to(export::<S>))
                .default_service(not_allowed()),
        );
    }
    for path in [
        "/v0/management/usage/import",
        "/v0/management/usage/import/",
    ] {
        config.service(
            web::resource(path)
                .route(web::post().to(import::<S>))
                .default_service(not_allowed()),
        );
    }
    config.service(
        web::resource([SESSIONS.to_string(), format!("{SESSIONS}/")])
            .route(web::post().to(create_session))
            .default_service(not_allowed()),
    );
    config.service(
        web::resource([format!("{SESSIONS}/{{id}}"), format!("{SESSIONS}/{{id}}/")])
            .route(web::get().to(get_session))
            .route(web::delete().to(cancel_session))
            .default_service(not_allowed()),
    );
    config.service(
        web::resource([
            format!("{SESSIONS}/{{id}}/chunk"),
            format!("{SESSIONS}/{{id}}/chunk/"),
        ])
        .route(web::put().to(write_chunk))
        .default_service(not_allowed()),
    );
    config.service(
        web::resource([
            format!("{SESSIONS}/{{id}}/complete"),
            format!("{SESSIONS}/{{id}}/complete/"),
        ])
        .route(web::post().to(complete_session::<S>))
        .default_service(not_allowed()),
    );
    // Unknown actions and deeper paths: plain-text 404, as the Go server.
    config.service(
        web::resource(format!("{SESSIONS}/{{tail:.*}}")).default_service(web::to(
            |_auth: AdminAuth| async {
                HttpResponse::NotFound()
                    .content_type("text/plain; charset=utf-8")
                    .body("404 page not found\n")
            },
        )),
    );
    config.service(
        web::resource(["/usage-service/backups", "/usage-service/backups/"])
            .route(web::get().to(list_backups))
            .route(web::post().to(create_backup::<S>))
            .default_service(not_allowed()),
    );
    config.service(
        web::resource([
            "/usage-service/backups/{name}",
            "/usage-service/backups/{name}/",
        ])
        .route(web::get().to(get_backup))
        .route(web::delete().to(delete_backup))
        .default_service(not_allowed()),
    );
    config.service(
        web::resource("/usage-service/backups/{name}/{file}")
            .route(web::get().to(download_backup_file))
            .default_service(not_allowed()),
    );
}

fn now_ms() -> i64 {
    super::analytics::now_ms()
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidRequest, message)
}

fn transfer_state(request: &HttpRequest) -> Result<web::Data<Transfer>, ApiError> {
    request
        .app_data::<web::Data<Transfer>>()
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::RequestFailed,
                "usage transfer is not configured on this server",
            )
        })
}

// ---------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------

/// Parses the export query: `from_ms`, `to_ms` (Unix ms, `[from, to)`), `model`
/// and `api_key_hash` (repeatable or comma-separated), `limit` (newest n),
/// `format` (`jsonl` or `csv`). Public for tests of the rules.
pub fn export_request(query: &str) -> Result<(EventSelection, ExportFormat), ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|error| invalid(format!("invalid query string: {error}")))?
        .into_inner();
    let mut selection = EventSelection::default();
    let mut format = ExportFormat::Jsonl;
    let integer = |name: &str, value: &str| -> Result<i64, ApiError> {
        value.trim().parse::<i64>().map_err(|_| {
            invalid(format!(
                "{name} must be an integer (Unix milliseconds for times); got {value:?}"
            ))
        })
    };
    for (name, value) in &pairs {
        let list = || {
            value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(String::from)
        };
        match name.as_str() {
            "from_ms" if !value.trim().is_empty() => {
                selection.from_ms = Some(integer(name, value)?)
            }
            "to_ms" if !value.trim().is_empty() => selection.to_ms = Some(integer(name, value)?),
            "model" | "models" => selection.models.extend(list()),
            "api_key_hash" | "api_key_hashes" => {
                for hash in list() {
                    if hash.len() != 64 || !hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                        return Err(invalid(format!(
                            "api_key_hash must be the 64-character SHA-256 hex of a client API key; got {hash:?}"
                        )));
                    }
                    selection.api_key_hashes.push(hash.to_ascii_lowercase());
                }
            }
            "limit" if !value.trim().is_empty() => {
                let limit = integer(name, value)?;
                if limit <= 0 {
                    return Err(invalid(
                        "limit must be a positive number of events (the newest are exported)",
                    ));
                }
                selection.newest = Some(limit as u64);
            }
            "format" if !value.trim().is_empty() => {
                format = ExportFormat::parse(value).ok_or_else(|| {
                    invalid(format!("format must be jsonl or csv; got {value:?}"))
                })?;
            }
            _ => {}
        }
    }
    if let (Some(from), Some(to)) = (selection.from_ms, selection.to_ms)
        && from >= to
    {
        return Err(invalid("from_ms must be before to_ms"));
    }
    Ok((selection, format))
}

async fn export<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (selection, format) = export_request(request.query_string())?;
    let export = state
        .store
        .open_export(selection, format)
        .await
        .map_err(|error| ApiError::internal("open the export", &error))?;
    let total = export.total();
    let body = futures_util::stream::unfold(Some(export), |export| async move {
        let mut export = export?;
        match export.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, actix_web::Error>(Bytes::from(chunk)), Some(export))),
            Ok(None) => None,
            Err(error) => {
                // Bytes went out already: the transfer is cut short, which the
                // client sees as an incomplete download.
                tracing::error!(%error, "usage export stream failed");
                Some((
                    Err(actix_web::error::ErrorInternalServerError(
                        "usage export failed",
                    )),
                    None,
                ))
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            CONTENT_DISPOSITION,
            ContentDisposition {
                disposition: DispositionType::Attachment,
                parameters: vec![DispositionParam::Filename(format.file_name().to_string())],
            },
        ))
        .insert_header((EXPORT_EVENTS_HEADER, total.to_string()))
        .streaming(body))
}

// ---------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------

/// An import result answered with an error: the counts so far plus `error` and `code`.
fn import_error(
    status: StatusCode,
    code: ErrorCode,
    message: &str,
    result: &ImportResult,
) -> HttpResponse {
    let mut body = serde_json::json!({ "error": message, "code": code.as_str() });
    if let (Some(object), Ok(serde_json::Value::Object(fields))) =
        (body.as_object_mut(), serde_json::to_value(result))
    {
        object.extend(fields);
    }
    HttpResponse::build(status).json(body)
}

fn too_large_message() -> String {
    format!(
        "request body too large: POST /v0/management/usage/import takes at most {} MiB; upload larger files through import sessions (/v0/management/usage/import-sessions) or run `cpamp-server import FILE`",
        IMPORT_LIMIT_BYTES / (1024 * 1024)
    )
}

/// Marks the pump's own error so it is told apart from reader errors.
#[derive(Debug)]
struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("request body too large")
    }
}

impl std::error::Error for BodyTooLarge {}

async fn import<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    request: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > IMPORT_LIMIT_BYTES) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UsageImportTooLarge,
            too_large_message(),
        ));
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let reader = BufReader::with_capacity(256 * 1024, ChannelReader::new(receiver));
    let progress = Arc::new(ImportProgress::default());
    let pump = async move {
        let mut received = 0u64;
        while let Some(chunk) = payload.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    received += bytes.len() as u64;
                    if received > IMPORT_LIMIT_BYTES {
                        let _ = sender.send(Err(std::io::Error::other(BodyTooLarge))).await;
                        return false;
                    }
                    Ok(bytes)
                }
                Err(error) => Err(std::io::Error::other(format!(
                    "the upload broke off: {error}"
                ))),
            };
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
        true
    };
    let (within_limit, outcome) =
        futures_util::future::join(pump, run_import(&state.store, reader, now_ms(), progress))
            .await;
    let result = outcome.result;
    match outcome.failure {
        None => Ok(HttpResponse::Ok().json(&result)),
        Some(ImportFailure::Read(error))
            if !within_limit
                || error
                    .get_ref()
                    .is_some_and(|inner| inner.is::<BodyTooLarge>()) =>
        {
            Ok(import_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::UsageImportTooLarge,
                &too_large_message(),
                &result,
            ))
        }
        Some(ImportFailure::Read(error)) => Ok(import_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::UsageImportInvalid,
            &error.to_string(),
            &result,
        )),
        Some(ImportFailure::Input(message)) => {
            let message = if result.added + result.skipped > 0 {
                format!(
                    "{message} (the {} events read before the problem were imported)",
                    result.added + result.skipped
                )
            } else {
                message
            };
            Ok(import_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::UsageImportInvalid,
                &message,
                &result,
            ))
        }
        Some(failure @ (ImportFailure::Store(_) | ImportFailure::Cancelled)) => {
            tracing::error!(error = %failure, "usage import failed");
            Ok(import_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::RequestFailed,
                "storing the imported events failed; the events counted as added are stored, and importing the same file again adds only the rest",
                &result,
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// Import sessions
// ---------------------------------------------------------------------------

fn session_error(error: SessionError) -> ApiError {
    let (status, code) = match error.kind {
        SessionErrorKind::InvalidRequest => (
            StatusCode::BAD_REQUEST,
            ErrorCode::UsageImportSessionInvalidRequest,
        ),
        SessionErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, ErrorCode::UsageImportSessionNotFound)
        }
        SessionErrorKind::Conflict => (StatusCode::CONFLICT, ErrorCode::UsageImportSessionConflict),
        SessionErrorKind::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UsageImportSessionTooLarge,
        ),
        SessionErrorKind::QuotaExceeded => (
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::UsageImportSessionQuotaExceeded,
        ),
        SessionErrorKind::LimitExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UsageImportSessionLimitExceeded,
        ),
        SessionErrorKind::Unavailable => (
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::UsageImportSessionUnavailable,
        ),
    };
    ApiError::new(status, code, error.message)
}

fn session_invalid(message: impl Into<String>) -> ApiError {
    session_error(SessionError {
        kind: SessionErrorKind::InvalidRequest,
        message: message.into(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    #[serde(default)]
    filename: String,
    size_bytes: i64,
    #[serde(default)]
    resume_key: Option<String>,
}

async fn create_session(
    _auth: AdminAuth,
    request: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|error| session_invalid(format!("read request body: {error}")))?;
        if body.len() + chunk.len() > SESSION_CREATE_LIMIT_BYTES {
            return Err(session_invalid("the request body is larger than 64 KiB"));
        }
        body.extend_from_slice(&chunk);
    }
    let create: CreateSession = serde_json::from_slice(&body).map_err(|error| {
        session_invalid(format!(
            "invalid session request (expected one JSON object {{\"filename\",\"size_bytes\",\"resume_key\"?}}): {error}"
        ))
    })?;
    let view = transfer
        .sessions
        .create(
            &create.filename,
            create.size_bytes,
            create.resume_key.as_deref(),
            now_ms(),
        )
        .map_err(session_error)?;
    Ok(HttpResponse::Created().json(view))
}

async fn get_session(
    _auth: AdminAuth,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let view = transfer
        .sessions
        .get(&id, now_ms())
        .map_err(session_error)?;
    Ok(HttpResponse::Ok().json(view))
}

async fn write_chunk(
    _auth: AdminAuth,
    request: HttpRequest,
    id: web::Path<String>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let offset = super::analytics::query_param(&pairs, "offset")
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| session_invalid("offset must be the number of bytes already received (a non-negative integer query parameter)"))?;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let upload = transfer
        .sessions
        .begin_chunk(&id, offset, declared, now_ms())
        .map_err(session_error)?;
    let written = receive_chunk(&transfer, &upload, declared, &mut payload).await;
    if written.is_err() {
        // Roll the data file back to where the chunk started.
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&upload.data) {
            let _ = file.set_len(upload.offset).and_then(|()| file.sync_all());
        }
    }
    let view = transfer
        .sessions
        .finish_chunk(&upload, written, now_ms())
        .map_err(session_error)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Appends the body to the session's data file and fsyncs it.
async fn receive_chunk(
    transfer: &Transfer,
    upload: &crate::transfer::sessions::ChunkUpload,
    declared: Option<u64>,
    payload: &mut web::Payload,
) -> Result<u64, SessionError> {
    use tokio::io::AsyncWriteExt as _;
    let io = |error: std::io::Error| SessionError {
        kind: SessionErrorKind::Unavailable,
        message: format!("write import session data: {error}"),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&upload.data)
        .await
        .map_err(io)?;
    let mut written = 0u64;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| SessionError {
            kind: SessionErrorKind::InvalidRequest,
            message: format!("the chunk upload broke off: {error}"),
        })?;
        if transfer.sessions.chunk_cancelled(&upload.id) {
            return Err(SessionError {
                kind: SessionErrorKind::Conflict,
                message: "the session was cancelled".into(),
            });
        }
        written += chunk.len() as u64;
        if written > upload.limit {
            return Err(SessionError {
                kind: SessionErrorKind::TooLarge,
                message: format!(
                    "the chunk is larger than the {} bytes accepted at this offset",
                    upload.limit
                ),
            });
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    if written == 0 {
        return Err(SessionError {
            kind: SessionErrorKind::InvalidRequest,
            message: "the chunk is empty; send between 1 byte and chunk_size_bytes".into(),
        });
    }
    if let Some(length) = declared
        && length != written
    {
        return Err(SessionError {
            kind: SessionErrorKind::InvalidRequest,
            message: format!("Content-Length says {length} bytes but {written} arrived"),
        });
    }
    file.sync_all().await.map_err(io)?;
    Ok(written)
}

async fn complete_session<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let (view, job) = transfer
        .sessions
        .complete(&id, now_ms())
        .map_err(session_error)?;
    if let Some(job) = job {
        let store = state.store.clone();
        let transfer = transfer.clone();
        tokio::spawn(async move {
            let outcome = match std::fs::File::open(&job.data) {
                Ok(file) => {
                    run_import(
                        &store,
                        BufReader::with_capacity(1024 * 1024, file),
                        now_ms(),
                        Arc::clone(&job.progress),
                    )
                    .await
                }
                Err(error) => crate::transfer::import::ImportOutcome {
                    result: ImportResult::default(),
                    failure: Some(ImportFailure::Read(error)),
                },
            };
            if let Some(failure) = &outcome.failure {
                tracing::warn!(session = %job.id, error = %failure, "usage import session ended with an error");
            } else {
                tracing::info!(session = %job.id, added = outcome.result.added, skipped = outcome.result.skipped, "usage import session completed");
            }
            transfer.sessions.finish_import(&job, outcome, now_ms());
        });
    }
    let status = if view.status == "processing" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(view))
}

async fn cancel_session(
    _auth: AdminAuth,
    request: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let mut view = transfer
        .sessions
        .cancel(&id, now_ms())
        .map_err(session_error)?;
    // A chunk upload in flight notices the cancel and rolls itself back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while transfer.sessions.chunk_running(&id) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if view.status != "processing" {
        view = transfer
            .sessions
            .get(&id, now_ms())
            .map_err(session_error)?;
    }
    let status = if view.status == "processing" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(view))
}

// ---------------------------------------------------------------------------
// Backups
// ---------------------------------------------------------------------------

fn backup_error(error: BackupError) -> ApiError {
    match error {
        BackupError::Invalid(message) => {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::BackupFailed, message)
        }
        other => {
            tracing::error!(error = %other, "backup failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::BackupFailed,
                format!("backup failed: {other}"),
            )
        }
    }
}

fn backup_dir(transfer: &Transfer, name: &str) -> Result<std::path::PathBuf, ApiError> {
    if !backup::is_backup_name(name) {
        return Err(invalid(format!(
            "{name:?} is not a backup name; backups are named cpamp-backup-YYYYMMDD-HHMMSS (GET /usage-service/backups lists them)"
        )));
    }
    let dir = transfer.backups_dir.join(name);
    if !dir.join(backup::MANIFEST_FILE).is_file() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("backup {name:?} not found"),
        ));
    }
    Ok(dir)
}

async fn list_backups(_auth: AdminAuth, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let items = backup::list(&transfer.backups_dir);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "directory": transfer.backups_dir.display().to_string(),
        "items": items,
    })))
}

async fn create_backup<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let Ok(_running) = transfer.backup_lock.try_lock() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::BackupInProgress,
            "a backup is already being written; wait for it to finish",
        ));
    };
    let now = now_ms();
    let base = backup::backup_name(now);
    let mut name = base.clone();
    let mut attempt = 1;
    while transfer.backups_dir.join(&name).exists() {
        attempt += 1;
        name = format!("{base}-{attempt}");
    }
    let dir = transfer.backups_dir.join(&name);
    let manifest = backup::create_backup(&state.store, &dir, &transfer.data_key, now)
        .await
        .map_err(backup_error)?;
    tracing::info!(backup = %dir.display(), events = manifest.events, "backup written");
    let mut body = serde_json::to_value(&manifest).unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        object.insert("path".into(), dir.display().to_string().into());
    }
    Ok(HttpResponse::Created().json(body))
}

async fn get_backup(
    _auth: AdminAuth,
    request: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let dir = backup_dir(&transfer, &name)?;
    let manifest = backup::verify(&dir).map_err(backup_error)?;
    Ok(HttpResponse::Ok().json(manifest))
}

async fn delete_backup(
    _auth: AdminAuth,
    request: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let dir = backup_dir(&transfer, &name)?;
    std::fs::remove_dir_all(&dir).map_err(|error| ApiError::internal("delete backup", &error))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deleted": name.as_str() })))
}

async fn download_backup_file(
    _auth: AdminAuth,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let transfer = transfer_state(&request)?;
    let (name, file) = path.into_inner();
    let dir = backup_dir(&transfer, &name)?;
    if ![
        backup::DATABASE_FILE,
        backup::DATA_KEY_FILE,
        backup::MANIFEST_FILE,
    ]
    .contains(&file.as_str())
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("a backup holds usage.sqlite, data.key and manifest.json; not {file:?}"),
        ));
    }
    let path = dir.join(&file);
    let handle = tokio::fs::File::open(&path).await.map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("backup {name:?} has no {file}"),
        )
    })?;
    let length = handle
        .metadata()
        .await
        .map_err(|error| ApiError::internal("read backup file", &error))?
        .len();
    let body = futures_util::stream::unfold(Some(handle), |handle| async move {
        use tokio::io::AsyncReadExt as _;
        let mut handle = handle?;
        let mut buffer = vec![0u8; 256 * 1024];
        match handle.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok::<_, actix_web::Error>(Bytes::from(buffer)), Some(handle)))
            }
            Err(error) => Some((Err(actix_web::error::ErrorInternalServerError(error)), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            CONTENT_DISPOSITION,
            ContentDisposition {
                disposition: DispositionType::Attachment,
                parameters: vec![DispositionParam::Filename(file.clone())],
            },
        ))
        .no_chunking(length)
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_queries_name_the_fix() {
        let (selection, format) = export_request(
            "from_ms=1&to_ms=5&model=gpt-5,claude&model=o3&format=CSV&limit=10&api_key_hash=ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
        )
        .expect("valid");
        assert_eq!((selection.from_ms, selection.to_ms), (Some(1), Some(5)));
        assert_eq!(selection.models, vec!["gpt-5", "claude", "o3"]);
        assert_eq!(selection.newest, Some(10));
        assert_eq!(selection.api_key_hashes[0], "ab".repeat(32));
        assert_eq!(format, ExportFormat::Csv);
        assert!(export_request("").is_ok());
        for (query, needle) in [
            ("from_ms=x", "from_ms must be an integer"),
            ("from_ms=5&to_ms=5", "from_ms must be before to_ms"),
            ("format=xml", "format must be jsonl or csv"),
            ("limit=0", "limit must be a positive"),
            ("api_key_hash=sk-raw-key", "SHA-256"),
        ] {
            let error = export_request(query).expect_err(query);
            assert!(error.message.contains(needle), "{query}: {}", error.message);
        }
    }
}
