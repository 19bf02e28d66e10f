//! Inspection runs as they are kept: a run with its counts, one result per inspected
//! account, its log, the lease that allows one active run per database, and the
//! disables inspection owns (automation spec §5.4, §5.8, §5.9).

use std::future::Future;

use crate::ports::StoreError;

/// Counts a run reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub total_files: i64,
    pub probe_set_count: i64,
    pub sampled_count: i64,
    pub disabled_count: i64,
    pub enabled_count: i64,
    pub delete_count: i64,
    pub disable_count: i64,
    pub enable_count: i64,
    pub reauth_count: i64,
    pub keep_count: i64,
}

/// One inspection run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub id: i64,
    /// `manual` or `scheduled`.
    pub trigger_type: String,
    pub trigger_key: String,
    /// `running`, `cancelling`, `completed`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub counts: RunCounts,
    pub error: String,
    /// The configuration the run used (JSON).
    pub settings_json: String,
    /// The process that runs it.
    pub owner_id: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Run {
    /// Still running or being cancelled.
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "running" | "cancelling")
    }
}

/// A run to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRun {
    pub trigger_type: String,
    pub trigger_key: String,
    pub settings_json: String,
    pub owner_id: String,
}

/// Why a run could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefusal {
    /// Another run holds a live lease.
    AlreadyRunning,
    /// A scheduled run of this trigger key exists.
    TriggerHandled,
}

/// One inspected account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunResult {
    pub id: i64,
    pub run_id: i64,
    pub account_key: String,
    pub file_name: String,
    pub display_account: String,
    pub account_snapshot: String,
    pub auth_index: String,
    pub account_id: String,
    pub provider: String,
    pub disabled: bool,
    pub status: String,
    pub state: String,
    pub action: String,
    pub action_reason: String,
    /// `none`, `pending`, `success`, `failed`, `skipped`, `needs_review` or empty.
    pub action_status: String,
    pub executed_action: String,
    pub action_error: String,
    pub status_code: Option<i64>,
    pub used_percent: Option<f64>,
    pub is_quota: bool,
    pub auto_recover_eligible: bool,
    pub error: String,
    pub plan_type: String,
    /// JSON array of quota windows; `[]` means an observed empty inventory, empty text
    /// means none reported.
    pub quota_windows_json: String,
    pub quota_inventory_observed: bool,
    pub error_kind: String,
    pub error_detail: String,
    pub created_at_ms: i64,
}

/// One log line of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLog {
    pub id: i64,
    pub run_id: i64,
    /// `info`, `success`, `warning` or `error`.
    pub level: String,
    pub message: String,
    /// JSON object, or empty.
    pub detail: String,
    pub created_at_ms: i64,
}

/// The lease of the active run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    pub run_id: i64,
    pub owner_id: String,
    pub heartbeat_at_ms: i64,
    pub lease_expires_at_ms: i64,
}

/// A credential an automatic inspection disable owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    pub auth_file_name: String,
    pub provider: String,
    pub auth_index: String,
    pub account_id: String,
    pub account_snapshot: String,
    pub run_id: i64,
    pub created_at_ms: i64,
}

/// Inspection runs and their lease.
pub trait InspectionStore: Clone + Send + Sync + 'static {
    /// In one transaction: refuses while another run holds a live lease (an expired
    /// lease's run is marked `interrupted`), refuses a scheduled trigger key already
    /// used, else inserts the run as `running` and takes the lease until
    /// `now_ms + lease_ms`.
    fn begin_run(
        &self,
        run: NewRun,
        now_ms: i64,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Result<Run, StartRefusal>, StoreError>> + Send;

    /// Extends the lease when `owner_id` still holds it for `run_id`; false otherwise.
    fn renew_lease(
        &self,
        run_id: i64,
        owner_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn lease(&self) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;

    /// Sets an active run's status (`cancelling`).
    fn set_run_status(
        &self,
        run_id: i64,
        status: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes the final state of a run and releases its lease (if still held by its
    /// owner).
    fn finish_run(&self, run: Run) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks active runs without a live lease `interrupted`; returns their ids.
    fn interrupt_stale_runs(
        &self,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Inserts or replaces the result of (run, account key); returns its id.
    fn save_result(
        &self,
        result: RunResult,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    fn append_log(&self, log: RunLog) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Newest first.
    fn runs(&self, limit: u32) -> impl Future<Output = Result<Vec<Run>, StoreError>> + Send;

    fn run(&self, id: i64) -> impl Future<Output = Result<Option<Run>, StoreError>> + Send;

    /// By file name, display account, id.
    fn results(
        &self,
        run_id: i64,
    ) -> impl Future<Output = Result<Vec<RunResult>, StoreError>> + Send;

    /// By time, id.
    fn logs(&self, run_id: i64) -> impl Future<Output = Result<Vec<RunLog>, StoreError>> + Send;

    /// The newest scheduled run.
    fn last_scheduled_run(&self) -> impl Future<Output = Result<Option<Run>, StoreError>> + Send;

    fn ownerships(&self) -> impl Future<Output = Result<Vec<Ownership>, StoreError>> + Send;

    fn add_ownership(
        &self,
        ownership: Ownership,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the ownership of `file` (of the credential with `auth_index` when
    /// given); returns how many rows.
    fn remove_ownership(
        &self,
        file: &str,
        auth_index: Option<&str>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes finished runs beyond the newest `keep` or older than `before_ms`.
    fn prune_runs(
        &self,
        keep: u32,
        before_ms: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
