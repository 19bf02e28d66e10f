//! Admin authentication: every Manager API requires `Authorization: Bearer <admin key>`.
//!
//! The stored credential is an argon2id PHC string under settings key
//! `admin_credential_v1`. Verifying argon2 is slow on purpose, so it runs on the
//! blocking pool, and keys that verified once are remembered (as a salted SHA-256,
//! never in plain text) so the panel's many requests don't each pay for it.
//!
//! Failed attempts are counted per client address ([`LoginLimiter`]): after five
//! failures within 15 minutes that address gets 429 with `Retry-After` until the
//! window has passed. A rejected key that is the saved CPA Management Key gets a 401
//! whose message says which key is needed, because mixing the keys up is the most
//! common support question. Credentials written by the Go server (`version: 1`,
//! HMAC-SHA256) keep working and are re-hashed to argon2id on first use.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use base64::Engine;
use cpamp_domain::keys;
use cpamp_domain::ports::SettingsStore;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{ApiError, ErrorCode};

/// Settings key of the admin credential record.
pub const CREDENTIAL_KEY: &str = "admin_credential_v1";

/// The stored admin credential. Version 2 (argon2id PHC) is written; version 1 (the
/// Go server's salted HMAC-SHA256) is read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRecord {
    pub version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phc: String,
    /// Version 1 only: base64 (no padding) salt, key hash and PBKDF2 rounds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub salt: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<i64>,
    pub source: String,
}

/// A stored credential in verifiable form.
#[derive(Clone)]
enum Credential {
    Argon2id(String),
    /// Go server record: salt, expected hash, PBKDF2 rounds (≤ 1 = plain HMAC).
    LegacyHmac {
        salt: Vec<u8>,
        hash: Vec<u8>,
        iterations: u32,
    },
}

impl CredentialRecord {
    fn credential(&self) -> Result<Credential, String> {
        if self.version >= 2 || !self.phc.is_empty() {
            if self.phc.is_empty() {
                return Err("argon2id record without phc".to_string());
            }
            return Ok(Credential::Argon2id(self.phc.clone()));
        }
        let decode = |text: &str| {
            let text = text.trim_end_matches('=');
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text)
                .map_err(|error| format!("legacy admin credential is not base64: {error}"))
        };
        Ok(Credential::LegacyHmac {
            salt: decode(&self.salt)?,
            hash: decode(&self.key_hash)?,
            iterations: self.iterations.unwrap_or(1),
        })
    }
}

/// Checks presented admin keys against the stored credential.
pub struct AdminAuthenticator {
    credential: Mutex<Credential>,
    /// Random per-process salt for the remembered-key digests.
    pepper: [u8; 32],
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for AdminAuthenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AdminAuthenticator { .. }")
    }
}

impl AdminAuthenticator {
    pub fn new(phc: String) -> AdminAuthenticator {
        AdminAuthenticator::with(Credential::Argon2id(phc))
    }

    /// The authenticator for a stored record (either version).
    pub fn from_record(record: &CredentialRecord) -> Result<AdminAuthenticator, ApiError> {
        let credential = record
            .credential()
            .map_err(|error| ApiError::internal("admin credential record is unreadable", &error))?;
        Ok(AdminAuthenticator::with(credential))
    }

    fn with(credential: Credential) -> AdminAuthenticator {
        let mut pepper = [0u8; 32];
        rand::fill(&mut pepper);
        AdminAuthenticator {
            credential: Mutex::new(credential),
            pepper,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// True while the stored credential is a Go-era record that should be re-hashed.
    pub fn is_legacy(&self) -> bool {
        matches!(*lock(&self.credential), Credential::LegacyHmac { .. })
    }

    /// Switches to a new argon2id hash (after re-hashing a legacy record).
    pub fn upgrade(&self, phc: String) {
        *lock(&self.credential) = Credential::Argon2id(phc);
    }

    fn digest(&self, token: &str) -> [u8; 32] {
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.pepper);
        hasher.update(token.as_bytes());
        hasher.finalize().into()
    }

    /// True if `token` is the admin key.
    pub async fn verify(&self, token: &str) -> bool {
        let token = token.trim();
        if token.is_empty() {
            return false;
        }
        let digest = self.digest(token);
        {
            let verified = lock(&self.verified);
            if verified.contains(&digest) {
                return true;
            }
        }
        let credential = lock(&self.credential).clone();
        let token = token.to_owned();
        let ok = tokio::task::spawn_blocking(move || match credential {
            Credential::Argon2id(phc) => keys::verify_admin_key(&phc, &token),
            Credential::LegacyHmac {
                salt,
                hash,
                iterations,
            } => keys::verify_legacy_admin_key(&salt, &hash, iterations, &token),
        })
        .await
        .unwrap_or(false);
        if ok {
            let mut verified = lock(&self.verified);
            // The set only ever holds the admin key's digest (one entry per process
            // in practice); cap it anyway.
            if verified.len() < 16 {
                verified.insert(digest);
            }
        }
        ok
    }
}

/// The bearer token of a request: `Authorization: Bearer <token>`, scheme
/// case-insensitive, token trimmed. Anything else is no token.
pub fn bearer_token(request: &HttpRequest) -> Option<String> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The message of a 401 for a key that is not the admin key.
pub const INVALID_ADMIN_KEY: &str = "invalid admin key";

/// The message of a 401 when the CPA Management Key was presented instead.
pub const CPA_KEY_PRESENTED: &str = "invalid admin key: this is the CPA Management Key. \
Manager Server APIs and the /management.html login need the CPAMP Admin Key (cmp_admin_...), \
shown once in the server log at first start; do not mix these keys. \
If the admin key is lost, stop the server and run `cpamp-server reset-admin-key`.";

/// The message of a 401 when a CPA client API key (seen in usage events) was presented.
pub const CPA_API_KEY_PRESENTED: &str = "invalid admin key: this is a CPA API Key, used for model \
calls such as /v1/models. Manager Server APIs and the /management.html login need the CPAMP \
Admin Key (cmp_admin_...), shown once in the server log at first start; do not mix these keys.";

/// What the admin check needs from the rest of the application, as an object so the
/// extractor stays independent of the store type. Registered as
/// `web::Data<dyn AuthBackend>`.
pub trait AuthBackend: Send + Sync {
    /// True when `token` is the CPA Management Key of the connection in effect.
    fn is_cpa_management_key<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + 'a>>;

    /// True when `token` is a CPA client API key seen in usage events.
    fn is_cpa_client_api_key<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + 'a>>;

    /// Re-hashes a verified key of a legacy credential to argon2id and stores it.
    fn upgrade_credential<'a>(
        &'a self,
        authenticator: &'a AdminAuthenticator,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

    fn limiter(&self) -> &LoginLimiter;
}

/// Proof that the request carried the admin key. Add it as a handler argument.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<AdminAuth, ApiError>>>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let authenticator = request.app_data::<web::Data<AdminAuthenticator>>().cloned();
        let backend = request.app_data::<web::Data<dyn AuthBackend>>().cloned();
        let token = bearer_token(request);
        let client = request.peer_addr().map(|addr| addr.ip());
        Box::pin(async move {
            let Some(authenticator) = authenticator else {
                return Err(ApiError::internal(
                    "admin credential is not initialized",
                    &"no AdminAuthenticator registered",
                ));
            };
            check_admin(
                &authenticator,
                backend.as_ref().map(|data| &***data),
                client,
                token.as_deref(),
            )
            .await?;
            Ok(AdminAuth)
        })
    }
}

/// The admin check behind [`AdminAuth`], usable by handlers that decide about auth
/// themselves (for example reads that are open before setup).
pub async fn check_admin(
    authenticator: &AdminAuthenticator,
    backend: Option<&dyn AuthBackend>,
    client: Option<IpAddr>,
    token: Option<&str>,
) -> Result<(), ApiError> {
    let limiter = backend.map(AuthBackend::limiter);
    if let (Some(limiter), Some(client)) = (limiter, client)
        && let Some(wait) = limiter.blocked_for(client)
    {
        return Err(too_many_attempts(wait));
    }
    if let Some(token) = token
        && authenticator.verify(token).await
    {
        if let (Some(limiter), Some(client)) = (limiter, client) {
            limiter.record_success(client);
        }
        if authenticator.is_legacy()
            && let Some(backend) = backend
        {
            backend.upgrade_credential(authenticator, token).await;
        }
        return Ok(());
    }
    if let (Some(limiter), Some(client)) = (limiter, client) {
        limiter.record_failure(client);
    }
    let message = match (backend, token) {
        (Some(backend), Some(token)) if backend.is_cpa_management_key(token).await => {
            CPA_KEY_PRESENTED
        }
        (Some(backend), Some(token)) if backend.is_cpa_client_api_key(token).await => {
            CPA_API_KEY_PRESENTED
        }
        _ => INVALID_ADMIN_KEY,
    };
    Err(ApiError::invalid_admin_key(message))
}

fn too_many_attempts(wait: Duration) -> ApiError {
    let seconds = wait.as_secs().max(1);
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyAttempts,
        format!("too many failed admin key attempts from this address; retry in {seconds} seconds"),
    );
    error.retry_after_secs = Some(seconds);
    error
}

/// Failures allowed per address and window before requests are refused.
pub const MAX_FAILURES: u32 = 5;
/// The failure window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most addresses tracked at once; expired windows are dropped beyond this.
const MAX_TRACKED: usize = 10_000;

/// Failed admin-key attempts per client address in a fixed 15-minute window that
/// starts at the first failure. The address is the TCP peer, not `X-Forwarded-For`,
/// which a client could set to anything to escape the count.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Default for LoginLimiter {
    fn default() -> LoginLimiter {
        LoginLimiter::new(MAX_FAILURES, FAILURE_WINDOW)
    }
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long `client` must still wait, if it is blocked.
    pub fn blocked_for(&self, client: IpAddr) -> Option<Duration> {
        let failures = lock(&self.failures);
        let (count, since) = failures.get(&client)?;
        let elapsed = since.elapsed();
        (*count >= self.max_failures && elapsed < self.window).then(|| self.window - elapsed)
    }

    pub fn record_failure(&self, client: IpAddr) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_TRACKED {
            let window = self.window;
            failures.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = failures.entry(client).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
    }

    pub fn record_success(&self, client: IpAddr) {
        lock(&self.failures).remove(&client);
    }
}

/// Compares a presented token with a known secret without revealing, through timing,
/// how much of it matched (both sides are hashed first, so lengths do not leak either).
pub fn same_secret(presented: &str, known: &str) -> bool {
    if known.is_empty() {
        return false;
    }
    let left = sha2::Sha256::digest(presented.trim().as_bytes());
    let right = sha2::Sha256::digest(known.as_bytes());
    keys::constant_time_eq(&left, &right)
}

/// What bootstrap did with the admin credential.
#[derive(Debug)]
pub enum CredentialBootstrap {
    /// A credential existed already.
    Existing,
    /// Seeded from `CPA_MANAGER_ADMIN_KEY` (or its file).
    Seeded,
    /// Generated; the key must be shown once.
    Generated(String),
}

/// Makes sure an admin credential exists and returns the authenticator for it.
/// With no credential stored, the seed key is used, else a key is generated.
pub async fn ensure_admin_credential<S: SettingsStore>(
    store: &S,
    seed_key: Option<&str>,
    now_ms: i64,
) -> Result<(AdminAuthenticator, CredentialBootstrap), ApiError> {
    if let Some(text) = store.get_setting(CREDENTIAL_KEY).await? {
        let record: CredentialRecord = serde_json::from_str(&text)
            .map_err(|error| ApiError::internal("admin credential record is unreadable", &error))?;
        return Ok((
            AdminAuthenticator::from_record(&record)?,
            CredentialBootstrap::Existing,
        ));
    }
    let (key, outcome) = match seed_key.map(str::trim).filter(|key| !key.is_empty()) {
        Some(seed) => (seed.to_owned(), CredentialBootstrap::Seeded),
        None => {
            let key = keys::generate_admin_key(&mut rand::rng());
            (key.clone(), CredentialBootstrap::Generated(key))
        }
    };
    let record = new_credential(
        &key,
        now_ms,
        match outcome {
            CredentialBootstrap::Seeded => "env",
            _ => "generated",
        },
    )?;
    let text = serde_json::to_string(&record)
        .map_err(|error| ApiError::internal("encode admin credential", &error))?;
    store.put_setting(CREDENTIAL_KEY, &text).await?;
    Ok((AdminAuthenticator::new(record.phc), outcome))
}

/// Builds a fresh credential record for `key`.
pub fn new_credential(key: &str, now_ms: i64, source: &str) -> Result<CredentialRecord, ApiError> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let phc = keys::hash_admin_key(key, &salt).map_err(|error| {
        ApiError::bad_request(crate::ErrorCode::RequestFailed, error.to_string())
    })?;
    Ok(CredentialRecord {
        version: 2,
        algorithm: "argon2id".to_string(),
        phc,
        salt: String::new(),
        key_hash: String::new(),
        iterations: None,
        created_at_ms: now_ms,
        rotated_at_ms: None,
        source: source.to_string(),
    })
}

/// Replaces the stored credential with an argon2id hash of `key`, keeping the original
/// creation time (used by `reset-admin-key` and by the legacy re-hash).
pub async fn replace_credential<S: SettingsStore>(
    store: &S,
    key: &str,
    source: &str,
    now_ms: i64,
    rotated: bool,
) -> Result<CredentialRecord, ApiError> {
    let created_at_ms = match store.get_setting(CREDENTIAL_KEY).await? {
        Some(text) => serde_json::from_str::<CredentialRecord>(&text)
            .map(|record| record.created_at_ms)
            .unwrap_or(now_ms),
        None => now_ms,
    };
    let key = key.to_string();
    let source_owned = source.to_string();
    let mut record =
        tokio::task::spawn_blocking(move || new_credential(&key, now_ms, &source_owned))
            .await
            .map_err(|error| ApiError::internal("hash admin key", &error))??;
    record.created_at_ms = created_at_ms;
    if rotated {
        record.rotated_at_ms = Some(now_ms);
    }
    let text = serde_json::to_string(&record)
        .map_err(|error| ApiError::internal("encode admin credential", &error))?;
    store.put_setting(CREDENTIAL_KEY, &text).await?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_block_an_address_until_the_window_passes() {
        let limiter = LoginLimiter::new(5, Duration::from_millis(300));
        let attacker: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..4 {
            limiter.record_failure(attacker);
            assert!(limiter.blocked_for(attacker).is_none());
        }
        limiter.record_failure(attacker);
        let wait = limiter.blocked_for(attacker).expect("blocked");
        assert!(wait <= Duration::from_millis(300));
        assert!(limiter.blocked_for(other).is_none());
        std::thread::sleep(Duration::from_millis(320));
        assert!(limiter.blocked_for(attacker).is_none());
        // A new failure after the window starts a new count.
        limiter.record_failure(attacker);
        assert!(limiter.blocked_for(attacker).is_none());
    }

    #[test]
    fn success_clears_the_count_and_secrets_compare_by_value() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let client: IpAddr = [127, 0, 0, 1].into();
        limiter.record_failure(client);
        limiter.record_success(client);
        limiter.record_failure(client);
        assert!(limiter.blocked_for(client).is_none());
        assert!(same_secret(" mgmt-key ", "mgmt-key"));
        assert!(!same_secret("mgmt-key", "mgmt-kez"));
        assert!(!same_secret("", ""));
    }

    #[tokio::test]
    async fn go_credential_records_verify() {
        use hmac_check::legacy_record;
        let record = legacy_record("cpamp_GoKey0123");
        let authenticator = AdminAuthenticator::from_record(&record).expect("record");
        assert!(authenticator.is_legacy());
        assert!(authenticator.verify("cpamp_GoKey0123").await);
        assert!(!authenticator.verify("cpamp_GoKey0124").await);
    }

    mod hmac_check {
        use super::super::CredentialRecord;
        use base64::Engine;
        use sha2::Digest;

        /// A version 1 record as the Go server writes it, built with HMAC from its
        /// definition (RFC 2104) so the test does not reuse the code under test.
        pub fn legacy_record(key: &str) -> CredentialRecord {
            let salt = [9u8; 16];
            let mut block = [0u8; 64];
            block[..16].copy_from_slice(&salt);
            let ipad: Vec<u8> = block.iter().map(|byte| byte ^ 0x36).collect();
            let opad: Vec<u8> = block.iter().map(|byte| byte ^ 0x5c).collect();
            let inner = sha2::Sha256::new()
                .chain_update(&ipad)
                .chain_update(key.as_bytes())
                .finalize();
            let outer = sha2::Sha256::new()
                .chain_update(&opad)
                .chain_update(inner)
                .finalize();
            let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
            serde_json::from_value(serde_json::json!({
                "version": 1,
                "salt": engine.encode(salt),
                "keyHash": engine.encode(outer),
                "iterations": 1,
                "createdAtMs": 1,
                "source": "generated",
            }))
            .expect("record")
        }
    }
}
