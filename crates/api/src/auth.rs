//! Admin authentication: every Manager API requires `Authorization: Bearer <admin key>`.
//!
//! The stored credential is an argon2id PHC string under settings key
//! `admin_credential_v1`. Verifying argon2 is slow on purpose, so it runs on the
//! blocking pool, and keys that verified once are remembered (as a salted SHA-256,
//! never in plain text) so the panel's many requests don't each pay for it.

use std::collections::HashSet;
use std::sync::Mutex;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use cpamp_domain::keys;
use cpamp_domain::ports::SettingsStore;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::ApiError;

/// Settings key of the admin credential record.
pub const CREDENTIAL_KEY: &str = "admin_credential_v1";

/// The stored admin credential (version 2: argon2id).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRecord {
    pub version: u32,
    pub algorithm: String,
    pub phc: String,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<i64>,
    pub source: String,
}

/// Checks presented admin keys against the stored credential.
pub struct AdminAuthenticator {
    phc: String,
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
        let mut pepper = [0u8; 32];
        rand::fill(&mut pepper);
        AdminAuthenticator {
            phc,
            pepper,
            verified: Mutex::new(HashSet::new()),
        }
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
            let verified = self
                .verified
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if verified.contains(&digest) {
                return true;
            }
        }
        let phc = self.phc.clone();
        let token = token.to_owned();
        let ok = tokio::task::spawn_blocking(move || keys::verify_admin_key(&phc, &token))
            .await
            .unwrap_or(false);
        if ok {
            let mut verified = self
                .verified
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
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

/// Proof that the request carried the admin key. Add it as a handler argument.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequest for AdminAuth {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<AdminAuth, ApiError>>>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let authenticator = request.app_data::<web::Data<AdminAuthenticator>>().cloned();
        let token = bearer_token(request);
        Box::pin(async move {
            let Some(authenticator) = authenticator else {
                return Err(ApiError::internal(
                    "admin credential is not initialized",
                    &"no AdminAuthenticator registered",
                ));
            };
            match token {
                Some(token) if authenticator.verify(&token).await => Ok(AdminAuth),
                _ => Err(ApiError::invalid_admin_key("invalid admin key")),
            }
        })
    }
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
            AdminAuthenticator::new(record.phc),
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
        created_at_ms: now_ms,
        rotated_at_ms: None,
        source: source.to_string(),
    })
}
