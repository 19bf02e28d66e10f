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
    /// The `status` value the ended row is stored with (`recovered`, `skipped` or
    /// `released`).
    pub fn as_str(self) -> &'static str {
        match self {
            CooldownEnd::Recovered => "recovered",
            CooldownEnd::Skipped => "skipped",
            CooldownEnd::Released => "released",
        }
    }
}

/// One quota cooldown row: a credential automation disabled because its quota ran out,
/// to be enabled again when the quota resets. Active rows feed
/// `GET /usage-service/quota-cooldowns`. All `*_ms` times are Unix milliseconds (UTC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cooldown {
    /// Row id, assigned by the store.
    pub id: i64,
    /// CPA auth file the credential lives in (`authFileName`).
    pub auth_file_name: String,
    /// CPA's auth index of the credential inside the file; empty when CPA reported none,
    /// in which case provider + account snapshot identify it.
    pub auth_index: String,
    /// Account (usually an e-mail) the auth file named when the cooldown started; empty
    /// when unknown.
    pub account_snapshot: String,
    /// Provider of the credential as seen on the event (`codex`, `xai`, …).
    pub provider: String,
    /// Which trigger disabled it (`cpamp_usage_429` for Codex usage limits,
    /// `cpamp_xai_free_usage` for xAI's free usage); recovery only restores these owners.
    pub owner: String,
    /// Machine-readable reason, e.g. `codex_usage_limit_reached`; empty when none.
    pub reason_code: String,
    /// Quota window that ran out: `five_hour`, `weekly`, `monthly`, `rolling_24h` or
    /// `unknown`.
    pub window_kind: String,
    /// JSON object, or empty.
    pub evidence_json: String,
    /// When the quota resets and the recovery loop may enable the credential again.
    pub recover_at_ms: i64,
    /// Dedupe hash of the usage event that triggered (or last extended) the cooldown.
    pub event_hash: String,
    /// `active`, `recovered`, `skipped` or `released`.
    pub status: String,
    /// When automation disabled the credential.
    pub disabled_at_ms: i64,
    /// When the cooldown ended (recovered, skipped or released); `None` while active.
    pub recovered_at_ms: Option<i64>,
    /// Why the last recovery attempt failed (retried on the next tick); empty when none.
    pub last_error: String,
    /// When the row was first written.
    pub created_at_ms: i64,
    /// When the row last changed (extension, error, end); pruning counts from here.
    pub updated_at_ms: i64,
}

/// A cooldown to start or extend. An active row of the same file, owner and credential
/// (auth index, else provider + account) is extended to the later reset instead.
/// Fields mean what they mean on [`Cooldown`]; times are Unix milliseconds (UTC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewCooldown {
    /// CPA auth file of the disabled credential.
    pub auth_file_name: String,
    /// CPA auth index of the credential; empty when unknown.
    pub auth_index: String,
    /// Account the auth file named; empty when unknown.
    pub account_snapshot: String,
    /// Provider of the credential (`codex`, `xai`, …).
    pub provider: String,
    /// Trigger that disabled it (`cpamp_usage_429` or `cpamp_xai_free_usage`).
    pub owner: String,
    /// Machine-readable reason, e.g. `codex_usage_limit_reached`.
    pub reason_code: String,
    /// Quota window that ran out (`five_hour`, `weekly`, `monthly`, `rolling_24h`,
    /// `unknown`).
    pub window_kind: String,
    /// Evidence as a JSON object (xAI free-usage metadata), or empty.
    pub evidence_json: String,
    /// When the quota resets; an extended row keeps the later of the two.
    pub recover_at_ms: i64,
    /// Dedupe hash of the triggering usage event.
    pub event_hash: String,
    /// When the credential was disabled in CPA.
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

/// One account-action candidate (automation spec §4.1): a credential whose
/// authentication failures suggest deleting, re-authorising or reviewing it, as listed
/// by `GET /v0/management/account-action-candidates`. All `*_ms` times are Unix
/// milliseconds (UTC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    /// Row id, assigned by the store; the panel's actions address it.
    pub id: i64,
    /// `delete`, `reauth` or `review`.
    pub action_type: String,
    /// `pending`, `ignored`, `resolved` or `deleted`.
    pub status: String,
    /// Provider of the failing credential (`codex`, `claude`, …); empty when unknown.
    pub provider: String,
    /// CPA auth file of the failing credential.
    pub auth_file_name: String,
    /// CPA auth index of the credential; empty when unknown.
    pub auth_index: String,
    /// Account (usually an e-mail) the auth file named when the failure was seen.
    pub account_snapshot: String,
    /// Provider-side account id the auth file named; empty when none.
    pub account_id_snapshot: String,
    /// The auth file's label in CPA; empty when none.
    pub auth_label: String,
    /// Machine-readable reason from the credential policy, e.g. `token_revoked`.
    pub reason_code: String,
    /// The reason in words, shown to the operator.
    pub reason: String,
    /// The failure is certain enough that automation may disable the credential when
    /// auto-disable is switched on.
    pub auto_disable_eligible: bool,
    /// When automation disabled the credential for this candidate; `None` when it did
    /// not (auto-disabled credentials are never re-enabled automatically).
    pub auto_disabled_at_ms: Option<i64>,
    /// JSON object, or empty.
    pub evidence_json: String,
    /// Why the last action on this candidate failed; empty when none.
    pub last_error: String,
    /// First failure that created the candidate.
    pub first_seen_at_ms: i64,
    /// Latest failure that renewed it.
    pub last_seen_at_ms: i64,
    /// How many failures the candidate absorbed while pending.
    pub hit_count: i64,
    /// When the row was written.
    pub created_at_ms: i64,
    /// When the row last changed; pruning of ended rows counts from here.
    pub updated_at_ms: i64,
}

/// A failure that makes (or renews) a pending candidate. Fields mean what they mean on
/// [`Candidate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CandidateHit {
    /// `delete`, `reauth` or `review`.
    pub action_type: String,
    /// Provider of the failing credential.
    pub provider: String,
    /// CPA auth file of the failing credential.
    pub auth_file_name: String,
    /// CPA auth index; empty when unknown.
    pub auth_index: String,
    /// Account the auth file named; empty when unknown.
    pub account_snapshot: String,
    /// Provider-side account id; empty when none.
    pub account_id_snapshot: String,
    /// The auth file's label in CPA; empty when none.
    pub auth_label: String,
    /// Machine-readable reason from the credential policy.
    pub reason_code: String,
    /// The reason in words.
    pub reason: String,
    /// Automation may disable the credential for this failure.
    pub auto_disable_eligible: bool,
    /// Evidence as a JSON object, or empty; the latest hit's evidence wins.
    pub evidence_json: String,
    /// Time of the failing event, Unix milliseconds (UTC).
    pub seen_at_ms: i64,
}

/// Account-action candidates: the queue behind
/// `GET /v0/management/account-action-candidates`, kept by storage.
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

    /// The candidate with this id, in any status; `None` when there is none.
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

    /// Records why an action on the candidate failed (`last_error`), shown in the panel.
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
    /// Row id, assigned by the store (ignored on append).
    pub id: i64,
    /// When the change was made, Unix milliseconds (UTC).
    pub at_ms: i64,
    /// `quota_cooldown`, `account_actions`, `inspection` or `operator`.
    pub actor: String,
    /// `disable`, `enable`, `delete`, `release`, `skip` …
    pub action: String,
    /// CPA auth file that was changed.
    pub auth_file_name: String,
    /// CPA auth index of the credential; empty when the change was file-wide or unknown.
    pub auth_index: String,
    /// Provider of the credential; empty when unknown.
    pub provider: String,
    /// Account (usually an e-mail) of the credential; empty when unknown.
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
    /// Only entries at or after this time (Unix milliseconds, UTC); `None` for all.
    pub since_ms: Option<i64>,
    /// Only entries of this actor (see [`AuditEntry::actor`]); `None` for all.
    pub actor: Option<String>,
    /// Only entries about this auth file; `None` for all.
    pub auth_file_name: Option<String>,
    /// Entries with an id below this (paging backwards).
    pub before_id: Option<i64>,
    /// Most entries to return.
    pub limit: u32,
}

/// The audit log of automatic account changes.
pub trait AuditStore: Clone + Send + Sync + 'static {
    /// Appends one entry; returns its new id.
    fn append_audit(
        &self,
        entry: AuditEntry,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The entries matching `query`, newest first, at most `query.limit`.
    fn audit_entries(
        &self,
        query: AuditQuery,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;

    /// Deletes entries older than `before_ms`; returns how many.
    fn prune_audit(&self, before_ms: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
