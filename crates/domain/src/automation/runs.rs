//! Inspection runs as they are kept: a run with its counts, one result per inspected
//! account, its log, the lease that allows one active run per database, and the
//! disables inspection owns (automation spec §5.4, §5.8, §5.9).

use std::future::Future;

use crate::ports::StoreError;

/// Counts a run reports (the `totalFiles` … `keepCount` fields of a run in
/// `/codex-inspection/runs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Credentials in CPA's auth-file listing when the run started.
    pub total_files: i64,
    /// Credentials of the inspected providers (the run's target types).
    pub probe_set_count: i64,
    /// Credentials actually probed after per-provider sampling (equals the probe set
    /// when the sample size is 0).
    pub sampled_count: i64,
    /// Probed credentials that were disabled in CPA when the run started.
    pub disabled_count: i64,
    /// Probed credentials that were enabled in CPA when the run started.
    pub enabled_count: i64,
    /// Results whose verdict is `delete`.
    pub delete_count: i64,
    /// Results whose verdict is `disable`.
    pub disable_count: i64,
    /// Results whose verdict is `enable`.
    pub enable_count: i64,
    /// Results whose verdict is `reauth`.
    pub reauth_count: i64,
    /// Results whose verdict is `keep`.
    pub keep_count: i64,
}

/// One inspection run. All `*_ms` times are Unix milliseconds (UTC).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// Row id, assigned by the store; the `runs/{id}` paths address it.
    pub id: i64,
    /// `manual` or `scheduled`.
    pub trigger_type: String,
    /// For scheduled runs the schedule slot it served (`interval:<minutes>:<bucket>` or
    /// `YYYY-MM-DD HH:MM` in the schedule's zone), unique so a slot runs once; empty for
    /// manual runs.
    pub trigger_key: String,
    /// `running`, `cancelling`, `completed`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    /// When the run took the lease.
    pub started_at_ms: i64,
    /// When the run reached a final status; `None` while active.
    pub finished_at_ms: Option<i64>,
    /// What the run found and decided.
    pub counts: RunCounts,
    /// Why the run failed, or which actions or writes failed; empty when none.
    pub error: String,
    /// The configuration the run used (JSON).
    pub settings_json: String,
    /// The process that runs it.
    pub owner_id: String,
    /// When the row was written.
    pub created_at_ms: i64,
    /// When the row last changed.
    pub updated_at_ms: i64,
}

impl Run {
    /// Still running or being cancelled.
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "running" | "cancelling")
    }
}

/// A run to start. Fields mean what they mean on [`Run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRun {
    /// `manual` or `scheduled`.
    pub trigger_type: String,
    /// The schedule slot of a scheduled run; empty for manual runs.
    pub trigger_key: String,
    /// The inspection configuration in effect, as JSON, kept with the run.
    pub settings_json: String,
    /// Id of the process that will run it and hold the lease.
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

/// One inspected account: a `results[]` item of a run's detail.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunResult {
    /// Row id, assigned by the store; manual actions select results by it.
    pub id: i64,
    /// The run this result belongs to.
    pub run_id: i64,
    /// Stable key of the credential within the run: `<file>::<auth index>`, or a
    /// `<file>::-…` form when CPA gave no auth index.
    pub account_key: String,
    /// CPA auth file of the credential.
    pub file_name: String,
    /// What the panel shows for the credential: its account, else label, else file name.
    pub display_account: String,
    /// Account (usually an e-mail) the auth file named; empty when none.
    pub account_snapshot: String,
    /// CPA auth index; empty when CPA gave none (the result is then `keep`).
    pub auth_index: String,
    /// Provider-side account id (ChatGPT account id for Codex); empty when unknown.
    pub account_id: String,
    /// Normalised provider (`codex`, `xai`).
    pub provider: String,
    /// The credential was disabled in CPA when it was inspected.
    pub disabled: bool,
    /// CPA's `status` text for the credential; empty when none.
    pub status: String,
    /// CPA's `state` text for the credential; empty when none.
    pub state: String,
    /// The verdict: `keep`, `reauth`, `disable`, `enable` or `delete`.
    pub action: String,
    /// Why that verdict, as a reason key or sentence for the panel.
    pub action_reason: String,
    /// `none`, `pending`, `success`, `failed`, `skipped`, `needs_review` or empty.
    pub action_status: String,
    /// The action actually sent to CPA (a `delete` may run as `disable`); empty when
    /// none ran.
    pub executed_action: String,
    /// Why executing the action failed or was skipped; empty when none.
    pub action_error: String,
    /// HTTP status of the probe's upstream answer; `None` when the probe got none.
    pub status_code: Option<i64>,
    /// Used percentage (0–100) the verdict rests on: the long (weekly or monthly)
    /// window's when known, else the highest reported window's; `None` when unknown.
    pub used_percent: Option<f64>,
    /// The verdict is about quota (exhausted or over the threshold), not credentials.
    pub is_quota: bool,
    /// An `enable` verdict that auto-recovery may execute, because inspection itself
    /// disabled the credential earlier.
    pub auto_recover_eligible: bool,
    /// Probe failure in words; empty when the probe answered.
    pub error: String,
    /// The account's plan (`plus`, `pro`, `team`, …) as reported; empty when unknown.
    pub plan_type: String,
    /// JSON array of quota windows; `[]` means an observed empty inventory, empty text
    /// means none reported.
    pub quota_windows_json: String,
    /// The probe answered with a quota inventory (possibly empty), so windows absent
    /// from it are known to be gone rather than unreported.
    pub quota_inventory_observed: bool,
    /// Machine-readable failure class (`request_error`, `missing_status`,
    /// `missing_auth_index`, `http_status`, an xAI class …); empty when none.
    pub error_kind: String,
    /// The failing upstream body or error text, truncated to 2 KiB; empty when none.
    pub error_detail: String,
    /// When the result was stored, Unix milliseconds (UTC).
    pub created_at_ms: i64,
}

/// One log line of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLog {
    /// Row id, assigned by the store.
    pub id: i64,
    /// The run the line belongs to.
    pub run_id: i64,
    /// `info`, `success`, `warning` or `error`.
    pub level: String,
    /// The line itself, a sentence or a panel translation key.
    pub message: String,
    /// JSON object, or empty.
    pub detail: String,
    /// When it was logged, Unix milliseconds (UTC).
    pub created_at_ms: i64,
}

/// The lease of the active run: the single row that lets only one process sharing the
/// database run an inspection at a time. Times are Unix milliseconds (UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    /// The run holding the lease.
    pub run_id: i64,
    /// The process holding it (`host:pid:…`).
    pub owner_id: String,
    /// When the owner last renewed it.
    pub heartbeat_at_ms: i64,
    /// When it lapses unless renewed; a lapsed lease's run counts as interrupted.
    pub lease_expires_at_ms: i64,
}

/// A credential an automatic inspection disable owns: only such credentials may be
/// re-enabled by auto-recovery, and a manual change through the proxy revokes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// CPA auth file of the disabled credential.
    pub auth_file_name: String,
    /// Normalised provider (`codex`, `xai`).
    pub provider: String,
    /// CPA auth index; empty when unknown.
    pub auth_index: String,
    /// Provider-side account id; empty when unknown.
    pub account_id: String,
    /// Account (usually an e-mail) the auth file named; empty when unknown.
    pub account_snapshot: String,
    /// The run whose automatic action disabled it.
    pub run_id: i64,
    /// When the disable was recorded, Unix milliseconds (UTC).
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

    /// The current lease row, live or lapsed; `None` when no run ever held one.
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

    /// Appends one log line to its run.
    fn append_log(&self, log: RunLog) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The newest `limit` runs, newest start first (then highest id), as
    /// `GET /codex-inspection/runs` lists them.
    fn runs(&self, limit: u32) -> impl Future<Output = Result<Vec<Run>, StoreError>> + Send;

    /// The run with this id; `None` when there is none.
    fn run(&self, id: i64) -> impl Future<Output = Result<Option<Run>, StoreError>> + Send;

    /// Every result of a run, ordered by file name, display account, then id.
    fn results(
        &self,
        run_id: i64,
    ) -> impl Future<Output = Result<Vec<RunResult>, StoreError>> + Send;

    /// Every log line of a run, oldest first (by time, then id).
    fn logs(&self, run_id: i64) -> impl Future<Output = Result<Vec<RunLog>, StoreError>> + Send;

    /// The newest scheduled run.
    fn last_scheduled_run(&self) -> impl Future<Output = Result<Option<Run>, StoreError>> + Send;

    /// Every credential inspection currently owns a disable of.
    fn ownerships(&self) -> impl Future<Output = Result<Vec<Ownership>, StoreError>> + Send;

    /// Records that an automatic inspection disable owns this credential.
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
