//! Resumable import sessions (analytics §1.4, automation §8): a large file is
//! uploaded in chunks to `<data dir>/usage-imports`, then imported in the
//! background with the same reader as a direct import.
//!
//! Every session is two files: `<id>.part` (the data, 0600) and `<id>.json`
//! (its state, written to a temporary file, fsynced and renamed into place), so
//! a restart finds every session as it was. The directory is 0700; a symlinked
//! directory or file is refused. Limits come from `USAGE_IMPORT_CHUNK_BYTES`,
//! `USAGE_IMPORT_DISK_QUOTA_BYTES`, `USAGE_IMPORT_MAX_SESSIONS` and
//! `USAGE_IMPORT_SESSION_TTL_MINUTES`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::import::{ImportFailure, ImportOutcome, ImportProgress, ImportResult};

/// Limits of import sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `<data dir>/usage-imports`.
    pub dir: PathBuf,
    /// Largest chunk (`USAGE_IMPORT_CHUNK_BYTES`).
    pub chunk_bytes: u64,
    /// Largest file and largest sum of reserved sizes (`USAGE_IMPORT_DISK_QUOTA_BYTES`).
    pub disk_quota_bytes: u64,
    /// Most active sessions (`USAGE_IMPORT_MAX_SESSIONS`).
    pub max_sessions: usize,
    /// Idle lifetime (`USAGE_IMPORT_SESSION_TTL_MINUTES`).
    pub ttl: Duration,
}

impl SessionConfig {
    /// Default largest chunk: 4 MiB.
    pub const DEFAULT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
    /// Default disk quota of all sessions together: 16 GiB.
    pub const DEFAULT_DISK_QUOTA_BYTES: u64 = 16 * 1024 * 1024 * 1024;
    /// Default most active sessions: 2.
    pub const DEFAULT_MAX_SESSIONS: usize = 2;
    /// Default idle lifetime: one day.
    pub const DEFAULT_TTL_MINUTES: u64 = 1440;

    /// Sessions kept in `dir` with the default limits.
    pub fn new(dir: PathBuf) -> SessionConfig {
        SessionConfig {
            dir,
            chunk_bytes: Self::DEFAULT_CHUNK_BYTES,
            disk_quota_bytes: Self::DEFAULT_DISK_QUOTA_BYTES,
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            ttl: Duration::from_secs(Self::DEFAULT_TTL_MINUTES * 60),
        }
    }

    /// How often expired sessions are removed: a quarter of the TTL, at most
    /// 15 minutes, at least a second.
    pub fn cleanup_interval(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(15 * 60))
    }
}

/// A session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Chunks are being received.
    Uploading,
    /// Every byte arrived; the import can start.
    Ready,
    /// The import is running.
    Processing,
    /// The import finished; `result` holds its counts.
    Completed,
    /// The import stopped with `error`; `retryable` says whether it can run again.
    Failed,
    /// Cancelled by the client.
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Uploading => "uploading",
            Status::Ready => "ready",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// What is stored in `<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    filename: String,
    status: Status,
    size_bytes: u64,
    received_bytes: u64,
    chunk_size_bytes: u64,
    created_at_ms: i64,
    updated_at_ms: i64,
    expires_at_ms: i64,
    retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<ImportResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resume_key: Option<String>,
    #[serde(default)]
    cancel_requested: bool,
}

/// A session as the API shows it (never the resume key).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionView {
    /// The session id.
    pub id: String,
    /// The file name the client gave.
    pub filename: String,
    /// The state (`uploading`, `ready`, `processing`, `completed`, `failed`, `cancelled`).
    pub status: &'static str,
    /// The announced file size.
    pub size_bytes: u64,
    /// Bytes received so far (where the next chunk starts).
    pub received_bytes: u64,
    /// The largest chunk the server accepts.
    pub chunk_size_bytes: u64,
    /// Unix ms of creation.
    pub created_at_ms: i64,
    /// Unix ms of the last change.
    pub updated_at_ms: i64,
    /// Unix ms after which an idle session is removed.
    pub expires_at_ms: i64,
    /// Whether a failed import may be started again.
    pub retryable: bool,
    /// Why the import failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The import's counts once it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ImportResult>,
}

impl Stored {
    fn view(&self) -> SessionView {
        SessionView {
            id: self.id.clone(),
            filename: self.filename.clone(),
            status: self.status.as_str(),
            size_bytes: self.size_bytes,
            received_bytes: self.received_bytes,
            chunk_size_bytes: self.chunk_size_bytes,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            expires_at_ms: self.expires_at_ms,
            retryable: self.retryable,
            error: self.error.clone(),
            result: self.result.clone(),
        }
    }

    /// Holds disk quota and a session slot.
    fn is_active(&self) -> bool {
        matches!(
            self.status,
            Status::Uploading | Status::Ready | Status::Processing
        ) || (self.status == Status::Failed && self.retryable)
    }
}

/// Why a session call failed; each kind has its HTTP status and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionErrorKind {
    /// The request is malformed (400).
    InvalidRequest,
    /// No such session (404).
    NotFound,
    /// The session's state or offset does not allow this (409).
    Conflict,
    /// Over the size limit (413).
    TooLarge,
    /// Over the disk quota of all sessions (507).
    QuotaExceeded,
    /// Too many active sessions (429).
    LimitExceeded,
    /// The session directory cannot be used (500).
    Unavailable,
}

/// A session call's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionError {
    /// What kind of failure, for the status and code.
    pub kind: SessionErrorKind,
    /// What went wrong and what to do.
    pub message: String,
}

impl SessionError {
    fn new(kind: SessionErrorKind, message: impl Into<String>) -> SessionError {
        SessionError {
            kind,
            message: message.into(),
        }
    }

    fn io(context: &str, error: &std::io::Error) -> SessionError {
        tracing::error!(%error, "{context}");
        SessionError::new(SessionErrorKind::Unavailable, format!("{context}: {error}"))
    }
}

/// What is going on with a session right now (not stored).
#[derive(Debug, Default)]
struct Activity {
    /// A chunk upload is running.
    chunk: bool,
    /// The running import, when processing.
    import: Option<Arc<ImportProgress>>,
}

struct Entry {
    stored: Stored,
    activity: Activity,
}

/// Every import session of this server.
pub struct ImportSessions {
    config: SessionConfig,
    /// Why the directory cannot be used; every call then fails with it.
    unavailable: Option<String>,
    sessions: Mutex<HashMap<String, Entry>>,
}

/// A session ready to be imported: where its data is.
#[derive(Debug)]
pub struct ImportJob {
    /// The session id.
    pub id: String,
    /// The uploaded file.
    pub data: PathBuf,
    /// Shared progress of the import, shown while it runs.
    pub progress: Arc<ImportProgress>,
}

/// A chunk upload in progress: the caller streams the body into `data` at `offset`.
#[derive(Debug)]
pub struct ChunkUpload {
    /// The session id.
    pub id: String,
    /// Where in the file the chunk starts.
    pub offset: u64,
    /// Most bytes the chunk may hold.
    pub limit: u64,
    /// The session's data file the chunk is written into.
    pub data: PathBuf,
}

impl ImportSessions {
    /// Opens the session directory and recovers the sessions in it.
    pub fn open(config: SessionConfig, now_ms: i64) -> ImportSessions {
        let mut sessions = ImportSessions {
            config,
            unavailable: None,
            sessions: Mutex::new(HashMap::new()),
        };
        match prepare_dir(&sessions.config.dir) {
            Ok(()) => sessions.recover(now_ms),
            Err(message) => {
                tracing::error!("usage import sessions are unavailable: {message}");
                sessions.unavailable = Some(message);
            }
        }
        sessions
    }

    /// The limits these sessions run under.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Entry>>, SessionError> {
        if let Some(message) = &self.unavailable {
            return Err(SessionError::new(
                SessionErrorKind::Unavailable,
                format!("usage import sessions are unavailable: {message}"),
            ));
        }
        Ok(self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.config.dir.join(format!("{id}.part"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.config.dir.join(format!("{id}.json"))
    }

    fn save(&self, stored: &Stored) -> Result<(), SessionError> {
        let text = serde_json::to_vec(stored).map_err(|error| {
            SessionError::new(
                SessionErrorKind::Unavailable,
                format!("encode session: {error}"),
            )
        })?;
        write_atomically(&self.meta_path(&stored.id), &text)
            .map_err(|error| SessionError::io("write session state", &error))
    }

    fn remove_files(&self, id: &str) {
        for path in [self.data_path(id), self.meta_path(id)] {
            if let Err(error) = std::fs::remove_file(&path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(%error, path = %path.display(), "remove import session file");
            }
        }
    }

    fn remove_data(&self, id: &str) {
        let path = self.data_path(id);
        if let Err(error) = std::fs::remove_file(&path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, path = %path.display(), "remove import session data");
        }
    }

    fn touch(&self, stored: &mut Stored, now_ms: i64) {
        stored.updated_at_ms = now_ms;
        stored.expires_at_ms = now_ms.saturating_add(ttl_ms(&self.config));
    }

    /// `POST /import-sessions`.
    pub fn create(
        &self,
        filename: &str,
        size_bytes: i64,
        resume_key: Option<&str>,
        now_ms: i64,
    ) -> Result<SessionView, SessionError> {
        self.cleanup(now_ms);
        let mut sessions = self.lock()?;
        if size_bytes <= 0 {
            return Err(SessionError::new(
                SessionErrorKind::InvalidRequest,
                "size_bytes must be a positive number of bytes",
            ));
        }
        let size_bytes = size_bytes as u64;
        let filename = clean_filename(filename);
        let resume_key = match resume_key.map(str::trim).filter(|key| !key.is_empty()) {
            None => None,
            Some(key)
                if key.len() == 32
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Some(key.to_string())
            }
            Some(_) => {
                return Err(SessionError::new(
                    SessionErrorKind::InvalidRequest,
                    "resume_key must be 32 lowercase hexadecimal characters",
                ));
            }
        };
        if let Some(key) = &resume_key
            && let Some(entry) = sessions
                .values()
                .find(|entry| entry.stored.resume_key.as_deref() == Some(key))
        {
            let stored = &entry.stored;
            if stored.filename == filename && stored.size_bytes == size_bytes {
                return Ok(stored.view());
            }
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                "resume_key belongs to a session for another file (name or size differ); use a new key",
            ));
        }
        let quota = self.config.disk_quota_bytes;
        if size_bytes > quota {
            return Err(SessionError::new(
                SessionErrorKind::TooLarge,
                format!(
                    "the file is {size_bytes} bytes, more than the import disk quota of {quota} bytes (USAGE_IMPORT_DISK_QUOTA_BYTES)"
                ),
            ));
        }
        let active: Vec<&Stored> = sessions
            .values()
            .filter(|entry| entry.stored.is_active() || entry.activity.chunk)
            .map(|entry| &entry.stored)
            .collect();
        if active.len() >= self.config.max_sessions {
            return Err(SessionError::new(
                SessionErrorKind::LimitExceeded,
                format!(
                    "{} import sessions are active, the most allowed (USAGE_IMPORT_MAX_SESSIONS); finish or cancel one first",
                    active.len()
                ),
            ));
        }
        let reserved: u64 = active.iter().map(|stored| stored.size_bytes).sum();
        if reserved.saturating_add(size_bytes) > quota {
            return Err(SessionError::new(
                SessionErrorKind::QuotaExceeded,
                format!(
                    "active import sessions reserve {reserved} of {quota} bytes (USAGE_IMPORT_DISK_QUOTA_BYTES); this file needs {size_bytes}"
                ),
            ));
        }
        let mut id_bytes = [0u8; 16];
        rand::fill(&mut id_bytes);
        let id = hex::encode(id_bytes);
        create_private_file(&self.data_path(&id))
            .map_err(|error| SessionError::io("create import session data", &error))?;
        let mut stored = Stored {
            id: id.clone(),
            filename,
            status: Status::Uploading,
            size_bytes,
            received_bytes: 0,
            chunk_size_bytes: self.config.chunk_bytes.min(size_bytes),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            expires_at_ms: now_ms,
            retryable: false,
            error: None,
            result: None,
            resume_key,
            cancel_requested: false,
        };
        self.touch(&mut stored, now_ms);
        if let Err(error) = self.save(&stored) {
            self.remove_files(&id);
            return Err(error);
        }
        let view = stored.view();
        sessions.insert(
            id,
            Entry {
                stored,
                activity: Activity::default(),
            },
        );
        Ok(view)
    }

    /// `GET /import-sessions/{id}`.
    pub fn get(&self, id: &str, now_ms: i64) -> Result<SessionView, SessionError> {
        check_id(id)?;
        self.cleanup(now_ms);
        let sessions = self.lock()?;
        sessions
            .get(id)
            .map(|entry| entry.stored.view())
            .ok_or_else(|| not_found(id))
    }

    /// Starts a chunk upload at `offset` (checks state and order; the session is
    /// busy until [`Self::finish_chunk`]).
    pub fn begin_chunk(
        &self,
        id: &str,
        offset: u64,
        declared_length: Option<u64>,
        now_ms: i64,
    ) -> Result<ChunkUpload, SessionError> {
        check_id(id)?;
        self.cleanup(now_ms);
        let mut sessions = self.lock()?;
        let entry = sessions.get_mut(id).ok_or_else(|| not_found(id))?;
        let stored = &entry.stored;
        if entry.activity.chunk {
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                "another chunk of this session is being uploaded; send chunks one at a time",
            ));
        }
        if stored.status != Status::Uploading {
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                format!(
                    "session is {}; chunks are accepted only while uploading",
                    stored.status.as_str()
                ),
            ));
        }
        if offset != stored.received_bytes {
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                format!("offset mismatch: expected {}", stored.received_bytes),
            ));
        }
        let on_disk = std::fs::symlink_metadata(self.data_path(id))
            .map_err(|error| SessionError::io("read import session data", &error))?;
        if !on_disk.file_type().is_file() || on_disk.len() != offset {
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                format!(
                    "the session's data file holds {} bytes, not {offset}; cancel the session and upload again",
                    on_disk.len()
                ),
            ));
        }
        let remaining = stored.size_bytes - stored.received_bytes;
        let limit = stored.chunk_size_bytes.min(remaining);
        match declared_length {
            Some(0) => {
                return Err(SessionError::new(
                    SessionErrorKind::InvalidRequest,
                    "the chunk is empty; send between 1 byte and chunk_size_bytes",
                ));
            }
            Some(length) if length > limit => {
                return Err(SessionError::new(
                    SessionErrorKind::TooLarge,
                    format!(
                        "the chunk is {length} bytes; at most {limit} are accepted at this offset"
                    ),
                ));
            }
            _ => {}
        }
        entry.activity.chunk = true;
        Ok(ChunkUpload {
            id: id.to_string(),
            offset,
            limit,
            data: self.data_path(id),
        })
    }

    /// True when a cancel asked the running chunk upload to stop.
    pub fn chunk_cancelled(&self, id: &str) -> bool {
        self.lock()
            .ok()
            .and_then(|sessions| sessions.get(id).map(|entry| entry.stored.cancel_requested))
            .unwrap_or(true)
    }

    /// Ends a chunk upload: `written` bytes were appended and fsynced, or the
    /// upload failed (the caller has truncated the file back to the offset).
    pub fn finish_chunk(
        &self,
        upload: &ChunkUpload,
        written: Result<u64, SessionError>,
        now_ms: i64,
    ) -> Result<SessionView, SessionError> {
        let mut sessions = self.lock()?;
        let entry = sessions
            .get_mut(&upload.id)
            .ok_or_else(|| not_found(&upload.id))?;
        entry.activity.chunk = false;
        if entry.stored.cancel_requested {
            entry.stored.status = Status::Cancelled;
            entry.stored.cancel_requested = false;
            self.touch(&mut entry.stored, now_ms);
            let stored = entry.stored.clone();
            self.remove_data(&stored.id);
            self.save(&stored)?;
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                "the session was cancelled during the upload",
            ));
        }
        let written = written?;
        let stored = &mut entry.stored;
        stored.received_bytes = upload.offset + written;
        if stored.received_bytes == stored.size_bytes {
            stored.status = Status::Ready;
        }
        self.touch(stored, now_ms);
        let snapshot = stored.clone();
        self.save(&snapshot)?;
        Ok(snapshot.view())
    }

    /// `POST /import-sessions/{id}/complete`: the session moves to `processing`
    /// and the returned job must be run; `None` when nothing is to be done.
    pub fn complete(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<(SessionView, Option<ImportJob>), SessionError> {
        check_id(id)?;
        self.cleanup(now_ms);
        let mut sessions = self.lock()?;
        let entry = sessions.get_mut(id).ok_or_else(|| not_found(id))?;
        let stored = &mut entry.stored;
        match stored.status {
            Status::Processing | Status::Completed => return Ok((stored.view(), None)),
            Status::Cancelled => {
                return Err(SessionError::new(
                    SessionErrorKind::Conflict,
                    "the session was cancelled",
                ));
            }
            Status::Failed if !stored.retryable => {
                return Err(SessionError::new(
                    SessionErrorKind::Conflict,
                    "the import failed and cannot be retried; fix the file and upload it in a new session",
                ));
            }
            Status::Uploading => {
                return Err(SessionError::new(
                    SessionErrorKind::Conflict,
                    format!(
                        "upload is not complete: {} of {} bytes received",
                        stored.received_bytes, stored.size_bytes
                    ),
                ));
            }
            Status::Ready | Status::Failed => {}
        }
        if entry.activity.chunk {
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                "a chunk is still being uploaded",
            ));
        }
        let data = self.data_path(id);
        let on_disk = std::fs::symlink_metadata(&data)
            .map_err(|error| SessionError::io("read import session data", &error))?;
        if !on_disk.file_type().is_file() || on_disk.len() != stored.size_bytes {
            return Err(SessionError::new(
                SessionErrorKind::Conflict,
                format!(
                    "the session's data file holds {} of {} bytes; cancel the session and upload again",
                    on_disk.len(),
                    stored.size_bytes
                ),
            ));
        }
        stored.status = Status::Processing;
        stored.error = None;
        stored.retryable = false;
        self.touch(stored, now_ms);
        let snapshot = stored.clone();
        self.save(&snapshot)?;
        let progress = Arc::new(ImportProgress::default());
        entry.activity.import = Some(Arc::clone(&progress));
        Ok((
            snapshot.view(),
            Some(ImportJob {
                id: id.to_string(),
                data,
                progress,
            }),
        ))
    }

    /// Records the outcome of a job.
    pub fn finish_import(&self, job: &ImportJob, outcome: ImportOutcome, now_ms: i64) {
        let Ok(mut sessions) = self.lock() else {
            return;
        };
        let Some(entry) = sessions.get_mut(&job.id) else {
            return;
        };
        entry.activity.import = None;
        let stored = &mut entry.stored;
        stored.result = Some(outcome.result);
        let keep_data = match outcome.failure {
            None => {
                stored.status = Status::Completed;
                false
            }
            Some(ImportFailure::Cancelled) => {
                stored.status = Status::Cancelled;
                false
            }
            Some(failure @ ImportFailure::Store(_)) => {
                stored.status = Status::Failed;
                stored.retryable = true;
                stored.error = Some(failure.to_string());
                true
            }
            Some(failure) => {
                stored.status = Status::Failed;
                stored.retryable = false;
                stored.error = Some(failure.to_string());
                false
            }
        };
        stored.cancel_requested = false;
        self.touch(stored, now_ms);
        let snapshot = stored.clone();
        if !keep_data {
            self.remove_data(&snapshot.id);
        }
        if let Err(error) = self.save(&snapshot) {
            tracing::error!(error = %error.message, "save import session outcome");
        }
    }

    /// `DELETE /import-sessions/{id}`. A chunk in flight is interrupted and rolled
    /// back; a running import is asked to stop and the session stays
    /// `processing` (answered with 202) until it has.
    pub fn cancel(&self, id: &str, now_ms: i64) -> Result<SessionView, SessionError> {
        check_id(id)?;
        self.cleanup(now_ms);
        let mut sessions = self.lock()?;
        let entry = sessions.get_mut(id).ok_or_else(|| not_found(id))?;
        let stored = &mut entry.stored;
        match stored.status {
            Status::Completed | Status::Cancelled => return Ok(stored.view()),
            Status::Processing => {
                stored.cancel_requested = true;
                if let Some(progress) = &entry.activity.import {
                    progress
                        .stop
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                self.touch(stored, now_ms);
                let snapshot = stored.clone();
                self.save(&snapshot)?;
                return Ok(snapshot.view());
            }
            _ => {}
        }
        if entry.activity.chunk {
            // The upload notices, rolls back and marks the session cancelled.
            stored.cancel_requested = true;
            return Ok(stored.view());
        }
        stored.status = Status::Cancelled;
        stored.retryable = false;
        self.touch(stored, now_ms);
        let snapshot = stored.clone();
        self.remove_data(id);
        self.save(&snapshot)?;
        Ok(snapshot.view())
    }

    /// Whether the session has a chunk upload running (cancel waits for it).
    pub fn chunk_running(&self, id: &str) -> bool {
        self.lock()
            .ok()
            .and_then(|sessions| sessions.get(id).map(|entry| entry.activity.chunk))
            .unwrap_or(false)
    }

    /// Removes expired sessions that nothing is working on.
    pub fn cleanup(&self, now_ms: i64) {
        let Ok(mut sessions) = self.lock() else {
            return;
        };
        let expired: Vec<String> = sessions
            .values()
            .filter(|entry| {
                entry.stored.expires_at_ms <= now_ms
                    && entry.stored.status != Status::Processing
                    && !entry.activity.chunk
                    && entry.activity.import.is_none()
            })
            .map(|entry| entry.stored.id.clone())
            .collect();
        for id in expired {
            self.remove_files(&id);
            if !self.meta_path(&id).exists() {
                sessions.remove(&id);
            }
        }
    }

    /// Reads the sessions left on disk by an earlier run and repairs them.
    fn recover(&mut self, now_ms: i64) {
        let entries = match std::fs::read_dir(&self.config.dir) {
            Ok(entries) => entries,
            Err(error) => {
                self.unavailable = Some(format!("read {}: {error}", self.config.dir.display()));
                return;
            }
        };
        let mut metas = Vec::new();
        let mut parts = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                metas.push(id.to_string());
            } else if let Some(id) = name.strip_suffix(".part") {
                parts.push(id.to_string());
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let mut recovered = HashMap::new();
        for id in metas {
            match self.recover_one(&id, now_ms) {
                Some(stored) => {
                    recovered.insert(
                        id,
                        Entry {
                            stored,
                            activity: Activity::default(),
                        },
                    );
                }
                None => self.remove_files(&id),
            }
        }
        for id in parts {
            if !recovered.contains_key(&id) {
                self.remove_data(&id);
            }
        }
        *self
            .sessions
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = recovered;
    }

    fn recover_one(&self, id: &str, now_ms: i64) -> Option<Stored> {
        let meta_path = self.meta_path(id);
        let metadata = std::fs::symlink_metadata(&meta_path).ok()?;
        if !metadata.file_type().is_file() {
            return None;
        }
        let mut stored: Stored = std::fs::read(&meta_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())?;
        if stored.id != id || stored.size_bytes == 0 {
            return None;
        }
        if stored.expires_at_ms <= now_ms && stored.status != Status::Processing {
            return None;
        }
        if stored.status == Status::Processing && stored.cancel_requested {
            stored.status = Status::Cancelled;
        }
        let needs_data = stored.is_active();
        if needs_data {
            let data = std::fs::symlink_metadata(self.data_path(id))
                .ok()
                .filter(|metadata| metadata.file_type().is_file());
            match data {
                None => {
                    stored.status = Status::Failed;
                    stored.retryable = false;
                    stored.error = Some("the uploaded data was lost while the server was down; upload the file again".into());
                }
                Some(data) => {
                    let size = data.len().min(stored.size_bytes);
                    if size != data.len() {
                        let _ = std::fs::OpenOptions::new()
                            .write(true)
                            .open(self.data_path(id))
                            .and_then(|file| file.set_len(size));
                    }
                    stored.received_bytes = size;
                    stored.status = if size == stored.size_bytes {
                        if stored.status == Status::Failed {
                            Status::Failed
                        } else {
                            Status::Ready
                        }
                    } else {
                        stored.retryable = false;
                        Status::Uploading
                    };
                }
            }
        } else {
            self.remove_data(id);
        }
        stored.cancel_requested = false;
        if self.save(&stored).is_err() {
            return None;
        }
        Some(stored)
    }
}

fn ttl_ms(config: &SessionConfig) -> i64 {
    i64::try_from(config.ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Session ids are 32 lowercase hex characters; anything else is a bad request.
fn check_id(id: &str) -> Result<(), SessionError> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(SessionError::new(
            SessionErrorKind::InvalidRequest,
            format!("{id:?} is not a session id (32 lowercase hexadecimal characters)"),
        ))
    }
}

fn not_found(id: &str) -> SessionError {
    SessionError::new(
        SessionErrorKind::NotFound,
        format!("usage import session {id:?} not found (expired sessions are removed)"),
    )
}

/// The base name, without NUL, at most 240 characters; `usage-import.jsonl` if empty.
fn clean_filename(name: &str) -> String {
    let name: String = name.chars().filter(|c| *c != '\0').collect();
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let base: String = base.chars().take(240).collect();
    if base.is_empty() || base == "." || base == ".." {
        "usage-import.jsonl".to_string()
    } else {
        base
    }
}

fn prepare_dir(dir: &Path) -> Result<(), String> {
    if let Ok(metadata) = std::fs::symlink_metadata(dir)
        && metadata.file_type().is_symlink()
    {
        return Err(format!(
            "{} is a symbolic link; use a real directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|error| format!("create {}: {error}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|error| format!("chmod 0700 {}: {error}", dir.display()))?;
    }
    Ok(())
}

/// Creates an empty file readable only by the owner; fails if it exists.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Writes `bytes` to a temporary file, fsyncs it and renames it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = create_private_file(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent()
        && let Ok(directory) = std::fs::File::open(parent)
    {
        let _ = directory.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn sessions(dir: &Path) -> ImportSessions {
        let mut config = SessionConfig::new(dir.join("usage-imports"));
        config.chunk_bytes = 10;
        config.disk_quota_bytes = 100;
        ImportSessions::open(config, 1_000)
    }

    fn upload(sessions: &ImportSessions, id: &str, bytes: &[u8], now: i64) -> SessionView {
        let upload = sessions
            .begin_chunk(
                id,
                sessions.get(id, now).unwrap().received_bytes,
                Some(bytes.len() as u64),
                now,
            )
            .unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&upload.data)
            .unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        sessions
            .finish_chunk(&upload, Ok(bytes.len() as u64), now)
            .unwrap()
    }

    #[test]
    fn limits_quota_and_resume_keys() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = sessions(dir.path());
        let error = sessions.create("a", 0, None, 1_000).unwrap_err();
        assert_eq!(error.kind, SessionErrorKind::InvalidRequest);
        let error = sessions.create("a", 101, None, 1_000).unwrap_err();
        assert_eq!(error.kind, SessionErrorKind::TooLarge);
        let error = sessions.create("a", 5, Some("XYZ"), 1_000).unwrap_err();
        assert_eq!(error.kind, SessionErrorKind::InvalidRequest);
        let key = "0123456789abcdef0123456789abcdef";
        let first = sessions
            .create("../dir/usage.jsonl", 60, Some(key), 1_000)
            .unwrap();
        assert_eq!(first.filename, "usage.jsonl");
        assert_eq!(first.chunk_size_bytes, 10);
        let again = sessions
            .create("usage.jsonl", 60, Some(key), 1_001)
            .unwrap();
        assert_eq!(again.id, first.id);
        let error = sessions
            .create("other.jsonl", 60, Some(key), 1_001)
            .unwrap_err();
        assert_eq!(error.kind, SessionErrorKind::Conflict);
        let error = sessions.create("b", 50, None, 1_000).unwrap_err();
        assert_eq!(error.kind, SessionErrorKind::QuotaExceeded);
        sessions.create("b", 40, None, 1_000).unwrap();
        let error = sessions.create("c", 1, None, 1_000).unwrap_err();
        assert_eq!(error.kind, SessionErrorKind::LimitExceeded);
    }

    #[test]
    fn chunks_go_in_order_and_sessions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = sessions(dir.path());
        let session = store.create("f.jsonl", 15, None, 1_000).unwrap();
        let error = store
            .begin_chunk(&session.id, 5, Some(5), 1_000)
            .unwrap_err();
        assert_eq!(error.message, "offset mismatch: expected 0");
        let error = store
            .begin_chunk(&session.id, 0, Some(11), 1_000)
            .unwrap_err();
        assert_eq!(error.kind, SessionErrorKind::TooLarge);
        let view = upload(&store, &session.id, b"0123456789", 1_000);
        assert_eq!((view.status, view.received_bytes), ("uploading", 10));
        let error = store.complete(&session.id, 1_000).unwrap_err();
        assert!(error.message.starts_with("upload is not complete"));
        let error = store
            .begin_chunk(&session.id, 10, Some(6), 1_000)
            .unwrap_err();
        assert_eq!(
            error.kind,
            SessionErrorKind::TooLarge,
            "only 5 bytes remain"
        );
        drop(store);

        // A restart finds the session where it was.
        let store = sessions(dir.path());
        let view = upload(&store, &session.id, b"abcde", 1_100);
        assert_eq!((view.status, view.received_bytes), ("ready", 15));
        let (view, job) = store.complete(&session.id, 1_200).unwrap();
        assert_eq!(view.status, "processing");
        let job = job.unwrap();
        assert_eq!(std::fs::read(&job.data).unwrap(), b"0123456789abcde");
        drop(store);

        // Interrupted while processing: ready again, safe to complete again.
        let store = sessions(dir.path());
        assert_eq!(store.get(&session.id, 1_300).unwrap().status, "ready");
        let (_, job) = store.complete(&session.id, 1_300).unwrap();
        store.finish_import(
            &job.unwrap(),
            ImportOutcome {
                result: ImportResult::default(),
                failure: None,
            },
            1_400,
        );
        let view = store.get(&session.id, 1_400).unwrap();
        assert_eq!(view.status, "completed");
        assert!(!store.data_path(&session.id).exists());
        // Expired sessions are removed.
        store.cleanup(1_400 + 1440 * 60_000);
        assert_eq!(
            store
                .get(&session.id, 1_400 + 1440 * 60_000)
                .unwrap_err()
                .kind,
            SessionErrorKind::NotFound
        );
        assert!(!store.meta_path(&session.id).exists());
    }

    #[test]
    fn cancel_releases_the_slot_and_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = sessions(dir.path());
        let session = store.create("f", 20, None, 1_000).unwrap();
        upload(&store, &session.id, b"12345", 1_000);
        let view = store.cancel(&session.id, 1_001).unwrap();
        assert_eq!(view.status, "cancelled");
        assert!(!store.data_path(&session.id).exists());
        assert_eq!(
            store.complete(&session.id, 1_002).unwrap_err().kind,
            SessionErrorKind::Conflict
        );
        // Two new sessions fit again (the cancelled one holds nothing).
        store.create("g", 20, None, 1_003).unwrap();
        store.create("h", 20, None, 1_003).unwrap();
        // The resume key never appears in what the API shows.
        let text = serde_json::to_string(&store.get(&session.id, 1_004).unwrap()).unwrap();
        assert!(!text.contains("resume"));
    }

    #[test]
    fn a_symlinked_directory_makes_sessions_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&real, dir.path().join("usage-imports")).unwrap();
            let store = sessions(dir.path());
            let error = store.create("f", 1, None, 1_000).unwrap_err();
            assert_eq!(error.kind, SessionErrorKind::Unavailable);
        }
    }
}
