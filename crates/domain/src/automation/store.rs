//! The automation ports: what the services keep in the database (quota cooldowns,
//! account-action candidates, the audit log), implemented by storage.

use std::future::Future;

use crate::ports::StoreError;

/// How a quota cooldown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownEnd {
    /// The credential was enabled again (or found enabled) when the quota reset.
    Recovered,
    /// Recovery was not attempted (identity changed, file gone, unknown owner …).
    Skipped,
    /// Someone changed the credential's status by hand during the cooldown; automation
    /// gave up its claim and will not touch it.
    Released,
}

impl CooldownEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            CooldownEnd::Recovered => "recovered",
            CooldownEnd::Skipped => "skipped",
            CooldownEnd::Released => "released",
        }
    }
}

/// One quota cooldown row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cooldown {
    pub id: i64,
    pub auth_file_name: String,
    pub auth_index: String,
    pub account_snapshot: String,
    pub provider: String,
    pub owner: String,
    pub reason_code: String,
    pub window_kind: String,
    /// JSON object, or empty.
    pub evidence_json: String,
    pub recover_at_ms: i64,
    pub event_hash: String,
    /// `active`, `recovered`, `skipped` or `released`.
    pub status: String,
    pub disabled_at_ms: i64,
    pub recovered_at_ms: Option<i64>,
    pub last_error: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A cooldown to start or extend. An active row of the same file, owner and credential
/// (auth index, else provider + account) is extended to the later reset instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewCooldown {
    pub auth_file_name: String,
    pub auth_index: String,
    pub account_snapshot: String,
    pub provider: String,
    pub owner: String,
    pub reason_code: String,
    pub window_kind: String,
    pub evidence_json: String,
    pub recover_at_ms: i64,
    pub event_hash: String,
    pub disabled_at_ms: i64,
}

/// Quota cooldowns (automation spec §3.5).
pub trait CooldownStore: Clone + Send + Sync + 'static {
    /// Inserts a cooldown or extends the matching active one; returns the stored row.
    fn upsert_cooldown(
        &self,
        cooldown: NewCooldown,
        now_ms: i64,
    ) -> impl Future<Output = Result<Cooldown, StoreError>> + Send;

    /// Active cooldowns, soonest recovery first.
    fn active_cooldowns(&self) -> impl Future<Output = Result<Vec<Cooldown>, StoreError>> + Send;

    /// Active cooldowns whose recovery is due at `now_ms`, oldest first, at most `limit`.
    fn due_cooldowns(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Cooldown>, StoreError>> + Send;

    /// Ends an active cooldown; false when it was not active any more.
    fn end_cooldown(
        &self,
        id: i64,
        end: CooldownEnd,
        note: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records why a recovery attempt failed (it is retried).
    fn record_cooldown_error(
        &self,
        id: i64,
        error: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes ended cooldowns last changed before `before_ms`; returns how many.
    fn prune_cooldowns(
        &self,
        before_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// One account-action candidate (automation spec §4.1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    pub id: i64,
    /// `delete`, `reauth` or `review`.
    pub action_type: String,
    /// `pending`, `ignored`, `resolved` or `deleted`.
    pub status: String,
    pub provider: String,
    pub auth_file_name: String,
    pub auth_index: String,
    pub account_snapshot: String,
    pub account_id_snapshot: String,
    pub auth_label: String,
    pub reason_code: String,
    pub reason: String,
    pub auto_disable_eligible: bool,
    pub auto_disabled_at_ms: Option<i64>,
    /// JSON object, or empty.
    pub evidence_json: String,
    pub last_error: String,
    pub first_seen_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub hit_count: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A failure that makes (or renews) a pending candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CandidateHit {
    pub action_type: String,
    pub provider: String,
    pub auth_file_name: String,
    pub auth_index: String,
    pub account_snapshot: String,
    pub account_id_snapshot: String,
    pub auth_label: String,
    pub reason_code: String,
    pub reason: String,
    pub auto_disable_eligible: bool,
    pub evidence_json: String,
    pub seen_at_ms: i64,
}

/// Account-action candidates.
pub trait CandidateStore: Clone + Send + Sync + 'static {
    /// Adds a hit to the matching pending candidate (same file, action and reason, and
    /// the same credential), or creates one. Ended candidates never absorb hits.
    fn record_candidate_hit(
        &self,
        hit: CandidateHit,
        now_ms: i64,
    ) -> impl Future<Output = Result<Candidate, StoreError>> + Send;

    /// Candidates with `status` (all when `None`), pending first, newest first, at most
    /// `limit`; and the number of pending candidates.
    fn candidates(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<(Vec<Candidate>, i64), StoreError>> + Send;

    fn candidate(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<Candidate>, StoreError>> + Send;

    /// Moves a pending candidate to `status` (clearing its error); `None` when it is
    /// missing or not pending.
    fn finish_candidate(
        &self,
        id: i64,
        status: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<Candidate>, StoreError>> + Send;

    /// Marks a pending candidate as disabled by automation.
    fn mark_candidate_auto_disabled(
        &self,
        id: i64,
        at_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn set_candidate_error(
        &self,
        id: i64,
        error: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes ended candidates last changed before `before_ms`; returns how many.
    fn prune_candidates(
        &self,
        before_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// One automatic (or automation-related) account change: who, what, why, CPA's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    /// `quota_cooldown`, `account_actions`, `inspection` or `operator`.
    pub actor: String,
    /// `disable`, `enable`, `delete`, `release`, `skip` …
    pub action: String,
    pub auth_file_name: String,
    pub auth_index: String,
    pub provider: String,
    pub account: String,
    /// Why (a reason code plus words).
    pub reason: String,
    /// `ok`, `failed` or `skipped`.
    pub outcome: String,
    /// CPA's answer or the error, shortened.
    pub detail: String,
}

/// Filters of the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub since_ms: Option<i64>,
    pub actor: Option<String>,
    pub auth_file_name: Option<String>,
    /// Entries with an id below this (paging backwards).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The audit log of automatic account changes.
pub trait AuditStore: Clone + Send + Sync + 'static {
    fn append_audit(
        &self,
        entry: AuditEntry,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Newest first.
    fn audit_entries(
        &self,
        query: AuditQuery,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;

    /// Deletes entries older than `before_ms`; returns how many.
    fn prune_audit(&self, before_ms: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
