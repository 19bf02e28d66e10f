//! Admin authentication: every Manager API requires `Authorization: Bearer <admin key>`.
//!
//! The stored credential is an argon2id PHC string under settings key
//! `admin_credential_v1`. Verifying argon2 is slow on purpose (19 MiB and tens of
//! milliseconds per check), so its cost is bounded three ways:
//! - keys that verified once are remembered as a digest keyed with a per-process random
//!   key (never in plain text, and never a key that failed), so the panel's many
//!   requests don't each pay for a check;
//! - failures are counted per client address *before* the check ([`LoginLimiter`]):
//!   checks in flight count as failures to come, so an address never has more than
//!   five checks running or failed in a window; a request beyond that waits briefly
//!   for one to finish and then gets 429 with `Retry-After`;
//! - at most [`MAX_CONCURRENT_VERIFICATIONS`] checks run at once in the whole process,
//!   on the blocking pool; a request that cannot get a turn within a few seconds (or
//!   finds too many already waiting) gets 503 with `Retry-After`.
//!
//! After five failures within 15 minutes an address gets 429 until the window has
//! passed. The address is the TCP peer, or, when the peer is a configured trusted
//! reverse proxy ([`TrustedProxies`]), the client that proxy names in
//! `X-Forwarded-For`. A rejected key that is the saved CPA Management Key gets a 401
//! whose message says which key is needed, because mixing the keys up is the most
//! common support question. Credentials written by the Go server (`version: 1`,
//! HMAC-SHA256) keep working and are re-hashed to argon2id on first use.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// 2 for argon2id (written by cpamp), 1 for the Go server's salted HMAC-SHA256.
    pub version: u32,
    /// The algorithm's name (`argon2id` in version 2).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm: String,
    /// Version 2: the argon2id PHC string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phc: String,
    /// Version 1 only: base64 (no padding) salt, key hash and PBKDF2 rounds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub salt: String,
    /// Version 1: the key hash (base64, no padding).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_hash: String,
    /// Version 1: the PBKDF2 rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Unix ms when the credential was first set.
    pub created_at_ms: i64,
    /// Unix ms of the last replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at_ms: Option<i64>,
    /// What set the credential (`generated` on first start, `env`, a reset, the demo).
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

/// Most argon2 checks running at once in the process (each holds 19 MiB while it runs).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;
/// Most requests waiting for a check at once; beyond this the answer is 503 at once.
const MAX_WAITING_VERIFICATIONS: usize = 64;
/// How long a request waits for its turn to run a check before it gets 503.
const VERIFICATION_WAIT: Duration = Duration::from_secs(5);

/// No argon2 check could be run now (too many running or waiting): answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Checks presented admin keys against the stored credential.
pub struct AdminAuthenticator {
    credential: Mutex<Credential>,
    /// Random per-process key of the remembered-key digests.
    pepper: [u8; 32],
    /// Digests of keys that verified (only ever the admin key's).
    verified: Mutex<HashSet<[u8; 32]>>,
    /// Turns to run an argon2 check.
    turns: tokio::sync::Semaphore,
    /// Requests waiting for a turn.
    waiting: AtomicUsize,
    /// argon2 (or Go-era HMAC) checks run since start.
    checks: AtomicU64,
}

impl std::fmt::Debug for AdminAuthenticator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AdminAuthenticator { .. }")
    }
}

impl AdminAuthenticator {
    /// Checks keys against the argon2id PHC string `phc`.
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
            turns: tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
            waiting: AtomicUsize::new(0),
            checks: AtomicU64::new(0),
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

    /// True if `token` verified before (no check runs).
    pub fn is_remembered(&self, token: &str) -> bool {
        let token = token.trim();
        !token.is_empty() && lock(&self.verified).contains(&self.digest(token))
    }

    /// The number of argon2 (or Go-era HMAC) checks run since the process started.
    pub fn checks_run(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// True if `token` is the admin key. A remembered key costs no check; otherwise the
    /// request waits for one of [`MAX_CONCURRENT_VERIFICATIONS`] turns, or gets
    /// [`Busy`] when too many are waiting or the wait runs out.
    pub async fn verify(&self, token: &str) -> Result<bool, Busy> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(false);
        }
        let digest = self.digest(token);
        if lock(&self.verified).contains(&digest) {
            return Ok(true);
        }
        let turn = {
            let _waiting = Waiting::enter(&self.waiting).ok_or(Busy)?;
            tokio::time::timeout(VERIFICATION_WAIT, self.turns.acquire())
                .await
                .map_err(|_| Busy)?
                .map_err(|_| Busy)?
        };
        // Another request may have verified the same key while this one waited.
        if lock(&self.verified).contains(&digest) {
            return Ok(true);
        }
        self.checks.fetch_add(1, Ordering::Relaxed);
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
        drop(turn);
        if ok {
            let mut verified = lock(&self.verified);
            // The set only ever holds the admin key's digest (one entry per process
            // in practice); cap it anyway.
            if verified.len() < 16 {
                verified.insert(digest);
            }
        }
        Ok(ok)
    }
}

/// One request counted among those waiting for a check, while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Option<Waiting<'a>> {
        let before = count.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(count);
        (before < MAX_WAITING_VERIFICATIONS).then_some(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    // Never empty: the value is trimmed, so something follows `Bearer ` once it is 7
    // bytes or more.
    Some(rest.trim().to_owned())
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

    /// The failed-login limiter of this server.
    fn limiter(&self) -> &LoginLimiter;
}

/// The client address a request is counted under: the TCP peer, or, when the peer is a
/// trusted reverse proxy, the client it names in `X-Forwarded-For`.
pub fn client_address(request: &HttpRequest) -> Option<IpAddr> {
    let peer = request.peer_addr()?.ip().to_canonical();
    match request.app_data::<web::Data<dyn AuthBackend>>() {
        Some(backend) => Some(backend.limiter().trusted.client(peer, request.headers())),
        None => Some(peer),
    }
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
        let client = client_address(request);
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
    let remembered = || token.is_some_and(|token| authenticator.is_remembered(token));
    let mut slot = match (limiter, client) {
        (Some(limiter), Some(client)) => limiter.admit(client, remembered).await?,
        _ => None,
    };
    // A remembered key costs no check inside `verify` either.
    let verified = match token {
        Some(token) => authenticator.verify(token).await.map_err(|Busy| busy())?,
        None => false,
    };
    if let Some(slot) = slot.as_mut() {
        slot.outcome = Some(verified);
    }
    drop(slot);
    if verified {
        if let (Some(limiter), Some(client)) = (limiter, client) {
            limiter.record_success(client);
        }
        if authenticator.is_legacy()
            && let (Some(backend), Some(token)) = (backend, token)
        {
            backend.upgrade_credential(authenticator, token).await;
        }
        return Ok(());
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

fn busy() -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ServerBusy,
        "the server is busy checking other admin key attempts; retry in a second",
    );
    error.retry_after_secs = Some(1);
    error
}

/// Failures allowed per address and window before requests are refused.
pub const MAX_FAILURES: u32 = 5;
/// The failure window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most addresses tracked at once; expired windows are dropped beyond this.
const MAX_TRACKED: usize = 10_000;
/// How long a request waits for a check of the same address to finish when that
/// address already has as many checks running as it has failures left.
const ADMISSION_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Attempts {
    failures: u32,
    since: Instant,
    /// Checks running now: each may be a failure to come.
    in_flight: u32,
}

/// Failed admin-key attempts per client address in a fixed 15-minute window that
/// starts at the first failure, with the checks in flight counted as failures to come.
/// The address is the TCP peer, or the forwarded client behind a trusted proxy
/// ([`client_address`]); `X-Forwarded-For` from anyone else is ignored, since a client
/// could set it to anything to escape the count.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    attempts: Mutex<HashMap<IpAddr, Attempts>>,
    /// Signalled whenever a check ends.
    released: tokio::sync::Notify,
    /// The reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted: TrustedProxies,
}

impl Default for LoginLimiter {
    fn default() -> LoginLimiter {
        LoginLimiter::new(MAX_FAILURES, FAILURE_WINDOW)
    }
}

/// What the limiter says about a new check for an address.
enum Admission {
    Blocked(Duration),
    Full,
    Admitted,
}

/// A check admitted for an address; ending it (dropped, also when the client goes away)
/// records its outcome and lets a waiting request of the same address in.
pub struct Slot<'a> {
    limiter: &'a LoginLimiter,
    client: IpAddr,
    /// `Some(true)` verified, `Some(false)` failed, `None` not decided (no count).
    outcome: Option<bool>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.limiter.finish(self.client, self.outcome);
    }
}

impl LoginLimiter {
    /// Blocks an address for `window` after `max_failures` failed admin key attempts.
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            max_failures,
            window,
            attempts: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
            trusted: TrustedProxies::default(),
        }
    }

    /// The limiter believing `X-Forwarded-For` from `trusted` proxies.
    pub fn trusting(mut self, trusted: TrustedProxies) -> LoginLimiter {
        self.trusted = trusted;
        self
    }

    /// How long `client` must still wait, if it is blocked.
    pub fn blocked_for(&self, client: IpAddr) -> Option<Duration> {
        let attempts = lock(&self.attempts);
        let entry = attempts.get(&client)?;
        let left = self.left(entry);
        (entry.failures >= self.max_failures && !left.is_zero()).then_some(left)
    }

    /// What is left of `entry`'s window (zero once it has passed).
    fn left(&self, entry: &Attempts) -> Duration {
        self.window.saturating_sub(entry.since.elapsed())
    }

    /// The number of addresses tracked now (bounded by `MAX_TRACKED` plus those with
    /// checks in flight).
    pub fn tracked(&self) -> usize {
        lock(&self.attempts).len()
    }

    fn try_begin(&self, client: IpAddr) -> Admission {
        let mut attempts = lock(&self.attempts);
        if attempts.len() >= MAX_TRACKED {
            // Forget addresses whose window has passed and that have no check running.
            attempts.retain(|_, entry| !(entry.in_flight == 0 && self.left(entry).is_zero()));
        }
        let entry = attempts.entry(client).or_insert(Attempts {
            failures: 0,
            since: Instant::now(),
            in_flight: 0,
        });
        let left = self.left(entry);
        if left.is_zero() {
            entry.failures = 0;
            entry.since = Instant::now();
        } else if entry.failures >= self.max_failures {
            return Admission::Blocked(left);
        }
        if entry.failures.saturating_add(entry.in_flight) >= self.max_failures {
            return Admission::Full;
        }
        entry.in_flight += 1;
        Admission::Admitted
    }

    /// Admits a check for `client`: `Ok(None)` when `remembered` says no check is
    /// needed, 429 when the address is blocked or stays full for `ADMISSION_WAIT`.
    pub async fn admit(
        &self,
        client: IpAddr,
        remembered: impl Fn() -> bool,
    ) -> Result<Option<Slot<'_>>, ApiError> {
        if let Some(wait) = self.blocked_for(client) {
            return Err(too_many_attempts(wait));
        }
        if remembered() {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + ADMISSION_WAIT;
        loop {
            let released = self.released.notified();
            match self.try_begin(client) {
                Admission::Blocked(wait) => return Err(too_many_attempts(wait)),
                Admission::Admitted => {
                    return Ok(Some(Slot {
                        limiter: self,
                        client,
                        outcome: None,
                    }));
                }
                Admission::Full => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(too_many_attempts(Duration::from_secs(1)));
                    }
                    // A check that just ended may have been the same key, now remembered.
                    if remembered() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn finish(&self, client: IpAddr, outcome: Option<bool>) {
        {
            let mut attempts = lock(&self.attempts);
            if let Some(entry) = attempts.get_mut(&client) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                match outcome {
                    Some(false) => entry.failures = entry.failures.saturating_add(1),
                    Some(true) => entry.failures = 0,
                    None => {}
                }
                if entry.failures == 0 && entry.in_flight == 0 {
                    attempts.remove(&client);
                }
            }
        }
        self.released.notify_waiters();
    }

    /// Counts a failed attempt from `client` that was checked elsewhere.
    pub fn record_failure(&self, client: IpAddr) {
        if let Admission::Admitted = self.try_begin(client) {
            self.finish(client, Some(false));
        }
    }

    /// Clears `client`'s failures after a successful attempt.
    pub fn record_success(&self, client: IpAddr) {
        let mut attempts = lock(&self.attempts);
        if let Some(entry) = attempts.get_mut(&client) {
            entry.failures = 0;
            if entry.in_flight == 0 {
                attempts.remove(&client);
            }
        }
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed (`CPA_MANAGER_TRUSTED_PROXIES`):
/// addresses and CIDR ranges. Empty by default: then the TCP peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses a comma-separated list such as `127.0.0.1, 10.0.0.0/8, ::1`.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut ranges = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (address, bits) = match item.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (item, None),
            };
            let address: IpAddr = address.trim().parse().map_err(|_| {
                format!("{item:?} is not an IP address or CIDR range (such as 10.0.0.0/8)")
            })?;
            let address = address.to_canonical();
            let max = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(bits) => match bits.trim().parse::<u8>() {
                    Ok(bits) if bits <= max => bits,
                    _ => {
                        return Err(format!(
                            "{item:?} has a prefix length other than 0 to {max}"
                        ));
                    }
                },
            };
            ranges.push((address, bits));
        }
        Ok(TrustedProxies { ranges })
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// True if `address` is one of the trusted proxies.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.ranges
            .iter()
            .any(|(range, bits)| match (range, address) {
                (IpAddr::V4(range), IpAddr::V4(address)) => {
                    prefix_matches(&range.octets(), &address.octets(), *bits)
                }
                (IpAddr::V6(range), IpAddr::V6(address)) => {
                    prefix_matches(&range.octets(), &address.octets(), *bits)
                }
                _ => false,
            })
    }

    /// The client of a request from `peer`: `peer` itself unless it is trusted; then the
    /// nearest address in `X-Forwarded-For` (read from the right) that is not a trusted
    /// proxy. An entry that is not an address ends the walk at the last trusted hop.
    pub fn client(&self, peer: IpAddr, headers: &actix_web::http::header::HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Ok(address) = hop.parse::<IpAddr>() else {
                break;
            };
            client = address.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

fn prefix_matches(range: &[u8], address: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if range[..full] != address[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (range[full] & mask) == (address[full] & mask)
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
        assert_eq!(authenticator.verify("cpamp_GoKey0123").await, Ok(true));
        assert_eq!(authenticator.verify("cpamp_GoKey0124").await, Ok(false));
        // The right key is remembered; a wrong one never is.
        assert!(authenticator.is_remembered("cpamp_GoKey0123"));
        assert!(!authenticator.is_remembered("cpamp_GoKey0124"));
        assert_eq!(authenticator.checks_run(), 2);
        assert_eq!(authenticator.verify("cpamp_GoKey0124").await, Ok(false));
        assert_eq!(authenticator.checks_run(), 3);
    }

    #[tokio::test]
    async fn checks_in_flight_count_as_failures_to_come() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let client: IpAddr = [10, 0, 0, 9].into();
        let first = limiter.admit(client, || false).await.expect("first");
        let second = limiter.admit(client, || false).await.expect("second");
        // Two checks running: a third waits, and once both failed it is refused.
        let third = limiter.admit(client, || false);
        let fail = async {
            tokio::task::yield_now().await;
            let mut first = first.expect("slot");
            first.outcome = Some(false);
            drop(first);
            let mut second = second.expect("slot");
            second.outcome = Some(false);
            drop(second);
        };
        let (third, ()) = tokio::join!(third, fail);
        let error = third.err().expect("refused");
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(limiter.blocked_for(client).is_some());
        // A remembered key needs no slot, but a blocked address stays blocked.
        assert!(limiter.admit(client, || true).await.is_err());
        let other: IpAddr = [10, 0, 0, 10].into();
        assert!(limiter.admit(other, || true).await.expect("ok").is_none());
    }

    #[test]
    fn forwarded_clients_are_believed_only_from_trusted_proxies() {
        use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
        let trusted = TrustedProxies::parse(" 127.0.0.1, 10.0.0.0/8 ,::1").expect("parse");
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.1.2.3"),
        );
        let proxy: IpAddr = [127, 0, 0, 1].into();
        let stranger: IpAddr = [192, 0, 2, 1].into();
        assert_eq!(
            trusted.client(proxy, &headers),
            IpAddr::from([203, 0, 113, 7])
        );
        assert_eq!(trusted.client(stranger, &headers), stranger);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(
            trusted.client(mapped, &headers),
            IpAddr::from([203, 0, 113, 7])
        );
        assert_eq!(trusted.client(proxy, &HeaderMap::new()), proxy);
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
        let wide = TrustedProxies::parse("172.16.0.0/12").expect("parse");
        assert!(wide.contains([172, 31, 255, 1].into()));
        assert!(!wide.contains([172, 32, 0, 1].into()));
    }

    use std::sync::Arc;

    use actix_web::test::TestRequest;

    use hmac_check::legacy_record;

    const KEY: &str = "cpamp_LegacyAdminKey0123";
    const CPA_KEY: &str = "cpa-management-key-0123";
    const CLIENT_KEY: &str = "sk-client-key-0123";

    /// What the admin check needs from the application, answering from fixed keys.
    struct Backend {
        limiter: LoginLimiter,
        upgraded: Mutex<Vec<String>>,
    }

    impl Backend {
        fn new(limiter: LoginLimiter) -> Backend {
            Backend {
                limiter,
                upgraded: Mutex::new(Vec::new()),
            }
        }
    }

    impl AuthBackend for Backend {
        fn is_cpa_management_key<'a>(
            &'a self,
            token: &'a str,
        ) -> Pin<Box<dyn Future<Output = bool> + 'a>> {
            Box::pin(async move { same_secret(token, CPA_KEY) })
        }

        fn is_cpa_client_api_key<'a>(
            &'a self,
            token: &'a str,
        ) -> Pin<Box<dyn Future<Output = bool> + 'a>> {
            Box::pin(async move { same_secret(token, CLIENT_KEY) })
        }

        fn upgrade_credential<'a>(
            &'a self,
            _authenticator: &'a AdminAuthenticator,
            key: &'a str,
        ) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
            Box::pin(async move { lock(&self.upgraded).push(key.to_string()) })
        }

        fn limiter(&self) -> &LoginLimiter {
            &self.limiter
        }
    }

    fn legacy(key: &str) -> AdminAuthenticator {
        AdminAuthenticator::from_record(&legacy_record(key)).expect("record")
    }

    fn message(result: Result<(), ApiError>) -> (StatusCode, String) {
        let error = result.expect_err("refused");
        (error.status, error.message)
    }

    #[test]
    fn bearer_tokens_come_only_from_the_bearer_scheme() {
        let token = |value: &str| {
            bearer_token(
                &TestRequest::default()
                    .insert_header((AUTHORIZATION, value))
                    .to_http_request(),
            )
        };
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("  bearer   abc  ").as_deref(), Some("abc"));
        assert_eq!(token("BEARER x").as_deref(), Some("x"));
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Basic YWRtaW46YWRtaW4="), None);
        assert_eq!(token("cmp_admin_no_scheme"), None);
        assert_eq!(
            bearer_token(&TestRequest::default().to_http_request()),
            None
        );
    }

    #[test]
    fn the_client_is_the_peer_in_canonical_form() {
        let request = |peer: &str| {
            TestRequest::default()
                .peer_addr(peer.parse().expect("address"))
                .to_http_request()
        };
        assert_eq!(
            client_address(&request("192.0.2.7:5000")),
            Some(IpAddr::from([192, 0, 2, 7]))
        );
        assert_eq!(
            client_address(&request("[::ffff:192.0.2.8]:5000")),
            Some(IpAddr::from([192, 0, 2, 8]))
        );
        assert_eq!(
            client_address(&TestRequest::default().to_http_request()),
            None
        );
    }

    #[tokio::test]
    async fn the_admin_check_refuses_wrong_keys_and_names_mixed_up_ones() {
        let authenticator = legacy(KEY);
        // Without a backend (no limiter, no hints): a wrong key and no key are refused.
        assert_eq!(
            message(check_admin(&authenticator, None, None, Some("cpamp_wrong")).await),
            (StatusCode::UNAUTHORIZED, INVALID_ADMIN_KEY.to_string())
        );
        assert!(check_admin(&authenticator, None, None, None).await.is_err());
        assert!(
            check_admin(&authenticator, None, None, Some(KEY))
                .await
                .is_ok()
        );
        // A remembered key passes again, and a wrong one still does not.
        assert!(
            check_admin(&authenticator, None, None, Some(KEY))
                .await
                .is_ok()
        );
        assert!(
            check_admin(&authenticator, None, None, Some("cpamp_wrong"))
                .await
                .is_err()
        );

        let backend = Backend::new(LoginLimiter::default());
        let client: IpAddr = [10, 1, 0, 1].into();
        let check = |token| check_admin(&authenticator, Some(&backend), Some(client), token);
        assert_eq!(
            message(check(Some(CPA_KEY)).await),
            (StatusCode::UNAUTHORIZED, CPA_KEY_PRESENTED.to_string())
        );
        assert_eq!(
            message(check(Some(CLIENT_KEY)).await),
            (StatusCode::UNAUTHORIZED, CPA_API_KEY_PRESENTED.to_string())
        );
        assert_eq!(
            message(check(Some("cpamp_other")).await),
            (StatusCode::UNAUTHORIZED, INVALID_ADMIN_KEY.to_string())
        );
        // The right key clears the count and, for a Go-era record, is re-hashed.
        assert!(check(Some(KEY)).await.is_ok());
        assert_eq!(*lock(&backend.upgraded), vec![KEY.to_string()]);
        for _ in 0..4 {
            assert_eq!(
                check(Some("cpamp_wrong")).await.expect_err("wrong").status,
                StatusCode::UNAUTHORIZED
            );
        }
        // The fifth failure blocks the address: even the right key gets 429 now.
        assert_eq!(
            check(None).await.expect_err("none").status,
            StatusCode::UNAUTHORIZED
        );
        let blocked = check(Some(KEY)).await.expect_err("blocked");
        assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            blocked
                .retry_after_secs
                .is_some_and(|seconds| seconds > 14 * 60)
        );
    }

    #[tokio::test]
    async fn records_and_their_credentials() {
        // An argon2id record without its hash is unreadable, whatever else it holds.
        let mut record = legacy_record(KEY);
        record.version = 2;
        assert!(AdminAuthenticator::from_record(&record).is_err());
        let modern = AdminAuthenticator::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        assert!(!modern.is_legacy());
        // Debug output shows nothing of the credential.
        assert_eq!(format!("{modern:?}"), "AdminAuthenticator { .. }");
        let authenticator = legacy(KEY);
        assert!(authenticator.is_legacy());
        authenticator.upgrade("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        assert!(!authenticator.is_legacy());
    }

    #[tokio::test]
    async fn at_most_sixteen_keys_are_remembered() {
        let authenticator = legacy("cpamp_key-00");
        for number in 0..17 {
            let key = format!("cpamp_key-{number:02}");
            *lock(&authenticator.credential) =
                legacy_record(&key).credential().expect("credential");
            assert_eq!(authenticator.verify(&key).await, Ok(true), "{key}");
        }
        assert!(authenticator.is_remembered("cpamp_key-15"));
        assert!(!authenticator.is_remembered("cpamp_key-16"));
        assert!(!authenticator.is_remembered(" "));
    }

    #[tokio::test]
    async fn too_many_waiting_checks_are_busy_at_once() {
        let count = AtomicUsize::new(MAX_WAITING_VERIFICATIONS - 1);
        let last = Waiting::enter(&count).expect("the last place in the queue");
        assert!(Waiting::enter(&count).is_none());
        // The refused request released its place again.
        assert_eq!(count.load(Ordering::Acquire), MAX_WAITING_VERIFICATIONS);
        drop(last);
        assert_eq!(count.load(Ordering::Acquire), MAX_WAITING_VERIFICATIONS - 1);

        let authenticator = legacy(KEY);
        authenticator
            .waiting
            .store(MAX_WAITING_VERIFICATIONS, Ordering::Release);
        assert_eq!(authenticator.verify(KEY).await, Err(Busy));
        assert_eq!(authenticator.checks_run(), 0);
        assert_eq!(
            message(check_admin(&authenticator, None, None, Some(KEY)).await),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy checking other admin key attempts; retry in a second"
                    .to_string()
            )
        );
    }

    #[test]
    fn the_default_window_is_fifteen_minutes_and_proxies_are_kept() {
        let limiter =
            LoginLimiter::default().trusting(TrustedProxies::parse("10.0.0.0/8").expect("parse"));
        assert!(limiter.trusted.contains([10, 9, 8, 7].into()));
        let client: IpAddr = [10, 0, 0, 3].into();
        for _ in 0..MAX_FAILURES {
            limiter.record_failure(client);
        }
        let wait = limiter.blocked_for(client).expect("blocked");
        assert!(wait > Duration::from_secs(14 * 60) && wait <= Duration::from_secs(15 * 60));
    }

    #[tokio::test]
    async fn only_expired_idle_addresses_are_forgotten_and_only_beyond_the_bound() {
        let window = Duration::from_millis(40);
        // Below the bound nothing is dropped, expired or not.
        let small = LoginLimiter::new(5, window);
        small.record_failure([10, 2, 0, 1].into());
        std::thread::sleep(window + Duration::from_millis(10));
        small.record_failure([10, 2, 0, 2].into());
        assert_eq!(small.tracked(), 2);
        // A success with nothing in flight forgets the address.
        small.record_success([10, 2, 0, 2].into());
        assert_eq!(small.tracked(), 1);

        let limiter = LoginLimiter::new(5, window);
        let busy: IpAddr = [10, 3, 0, 1].into();
        let slot = limiter
            .admit(busy, || false)
            .await
            .expect("admit")
            .expect("slot");
        for index in 0..(MAX_TRACKED as u32 - 1) {
            limiter.record_failure(IpAddr::from((10 << 24 | 1 << 16 | index).to_be_bytes()));
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        std::thread::sleep(window + Duration::from_millis(10));
        let fresh: IpAddr = [10, 4, 0, 1].into();
        limiter.record_failure(fresh);
        let recent: IpAddr = [10, 4, 0, 2].into();
        limiter.record_failure(recent);
        // The expired idle ones are gone; the one with a check running and the new ones
        // stay.
        assert_eq!(limiter.tracked(), 3);
        // A check that ends undecided leaves nothing behind for an address without
        // failures.
        drop(slot);
        assert_eq!(limiter.tracked(), 2);
    }

    #[tokio::test]
    async fn a_waiting_check_is_let_in_when_another_succeeds() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let client: IpAddr = [10, 5, 0, 1].into();
        let first = limiter.admit(client, || false).await.expect("first");
        let second = limiter.admit(client, || false).await.expect("second");
        let third = limiter.admit(client, || false);
        let succeed = async {
            tokio::task::yield_now().await;
            let mut first = first.expect("slot");
            first.outcome = Some(true);
            drop(first);
        };
        let (third, ()) = tokio::join!(third, succeed);
        assert!(third.expect("admitted").is_some());
        drop(second);
        assert!(limiter.blocked_for(client).is_none());
    }

    #[test]
    fn trusted_proxy_lists_hold_ipv6_ranges() {
        use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
        let trusted = TrustedProxies::parse("::1, fd00::/8").expect("parse");
        assert!(!trusted.is_empty());
        assert!(trusted.contains("::1".parse().expect("ip")));
        assert!(trusted.contains("fd12::7".parse().expect("ip")));
        assert!(!trusted.contains("fe80::1".parse().expect("ip")));
        assert!(!trusted.contains([127, 0, 0, 1].into()));
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("2001:db8::9"),
        );
        assert_eq!(
            trusted.client("::1".parse().expect("ip"), &headers),
            "2001:db8::9".parse::<IpAddr>().expect("ip")
        );
    }

    /// Settings kept in memory, for the bootstrap of the credential.
    #[derive(Clone, Default)]
    struct Settings(Arc<Mutex<HashMap<String, String>>>);

    impl SettingsStore for Settings {
        fn get_setting(
            &self,
            key: &str,
        ) -> impl Future<Output = Result<Option<String>, cpamp_domain::StoreError>> + Send {
            let value = lock(&self.0).get(key).cloned();
            async move { Ok(value) }
        }

        fn put_setting(
            &self,
            key: &str,
            value: &str,
        ) -> impl Future<Output = Result<(), cpamp_domain::StoreError>> + Send {
            lock(&self.0).insert(key.to_string(), value.to_string());
            async { Ok(()) }
        }
    }

    fn stored_source(settings: &Settings) -> String {
        let text = lock(&settings.0)
            .get(CREDENTIAL_KEY)
            .cloned()
            .expect("record");
        serde_json::from_str::<CredentialRecord>(&text)
            .expect("record")
            .source
    }

    #[tokio::test]
    async fn the_first_credential_comes_from_the_seed_else_is_generated() {
        let seeded = Settings::default();
        let (authenticator, outcome) =
            ensure_admin_credential(&seeded, Some(" cmp_admin_Seed0123 "), 7)
                .await
                .expect("seeded");
        assert!(matches!(outcome, CredentialBootstrap::Seeded));
        assert_eq!(stored_source(&seeded), "env");
        assert_eq!(authenticator.verify("cmp_admin_Seed0123").await, Ok(true));
        // Once stored, the seed no longer matters.
        let (_, again) = ensure_admin_credential(&seeded, Some("cmp_admin_Other"), 8)
            .await
            .expect("existing");
        assert!(matches!(again, CredentialBootstrap::Existing));

        let blank = Settings::default();
        let (authenticator, outcome) = ensure_admin_credential(&blank, Some("   "), 7)
            .await
            .expect("generated");
        let CredentialBootstrap::Generated(key) = outcome else {
            panic!("a blank seed is no seed");
        };
        assert_eq!(stored_source(&blank), "generated");
        assert_eq!(authenticator.verify(&key).await, Ok(true));
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
