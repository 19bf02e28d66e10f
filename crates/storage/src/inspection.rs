//! The inspection tables behind [`InspectionStore`] (migration 0061): runs, the single
//! lease row, results, logs and disable ownership.

use cpamp_domain::StoreError;
use cpamp_domain::automation::runs::{
    InspectionStore, Lease, NewRun, Ownership, Run, RunCounts, RunLog, RunResult, StartRefusal,
};
use sqlx::{Sqlite, SqliteConnection, Transaction};

use crate::{SqliteStore, error};

const RUN_COLUMNS: &str = "id, trigger_type, trigger_key, status, started_at_ms, finished_at_ms, \
    total_files, probe_set_count, sampled_count, disabled_count, enabled_count, delete_count, \
    disable_count, enable_count, reauth_count, keep_count, error, settings_json, owner_id, \
    created_at_ms, updated_at_ms";

#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    trigger_type: String,
    trigger_key: String,
    status: String,
    started_at_ms: i64,
    finished_at_ms: Option<i64>,
    total_files: i64,
    probe_set_count: i64,
    sampled_count: i64,
    disabled_count: i64,
    enabled_count: i64,
    delete_count: i64,
    disable_count: i64,
    enable_count: i64,
    reauth_count: i64,
    keep_count: i64,
    error: String,
    settings_json: String,
    owner_id: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<RunRow> for Run {
    fn from(row: RunRow) -> Run {
        Run {
            id: row.id,
            trigger_type: row.trigger_type,
            trigger_key: row.trigger_key,
            status: row.status,
            started_at_ms: row.started_at_ms,
            finished_at_ms: row.finished_at_ms,
            counts: RunCounts {
                total_files: row.total_files,
                probe_set_count: row.probe_set_count,
                sampled_count: row.sampled_count,
                disabled_count: row.disabled_count,
                enabled_count: row.enabled_count,
                delete_count: row.delete_count,
                disable_count: row.disable_count,
                enable_count: row.enable_count,
                reauth_count: row.reauth_count,
                keep_count: row.keep_count,
            },
            error: row.error,
            settings_json: row.settings_json,
            owner_id: row.owner_id,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }
    }
}

const RESULT_COLUMNS: &str = "id, run_id, account_key, file_name, display_account, account_snapshot, \
    auth_index, account_id, provider, disabled, status, state, action, action_reason, action_status, \
    executed_action, action_error, status_code, used_percent, is_quota, auto_recover_eligible, error, \
    plan_type, quota_windows_json, quota_inventory_observed, error_kind, error_detail, created_at_ms";

#[derive(sqlx::FromRow)]
struct ResultRow {
    id: i64,
    run_id: i64,
    account_key: String,
    file_name: String,
    display_account: String,
    account_snapshot: String,
    auth_index: String,
    account_id: String,
    provider: String,
    disabled: bool,
    status: String,
    state: String,
    action: String,
    action_reason: String,
    action_status: String,
    executed_action: String,
    action_error: String,
    status_code: Option<i64>,
    used_percent: Option<f64>,
    is_quota: bool,
    auto_recover_eligible: bool,
    error: String,
    plan_type: String,
    quota_windows_json: String,
    quota_inventory_observed: bool,
    error_kind: String,
    error_detail: String,
    created_at_ms: i64,
}

impl From<ResultRow> for RunResult {
    fn from(row: ResultRow) -> RunResult {
        RunResult {
            id: row.id,
            run_id: row.run_id,
            account_key: row.account_key,
            file_name: row.file_name,
            display_account: row.display_account,
            account_snapshot: row.account_snapshot,
            auth_index: row.auth_index,
            account_id: row.account_id,
            provider: row.provider,
            disabled: row.disabled,
            status: row.status,
            state: row.state,
            action: row.action,
            action_reason: row.action_reason,
            action_status: row.action_status,
            executed_action: row.executed_action,
            action_error: row.action_error,
            status_code: row.status_code,
            used_percent: row.used_percent,
            is_quota: row.is_quota,
            auto_recover_eligible: row.auto_recover_eligible,
            error: row.error,
            plan_type: row.plan_type,
            quota_windows_json: row.quota_windows_json,
            quota_inventory_observed: row.quota_inventory_observed,
            error_kind: row.error_kind,
            error_detail: row.error_detail,
            created_at_ms: row.created_at_ms,
        }
    }
}

async fn run_by_id(connection: &mut SqliteConnection, id: i64) -> Result<Option<Run>, sqlx::Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM codex_inspection_runs WHERE id = ?");
    Ok(sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(connection)
        .await?
        .map(Run::from))
}

async fn mark_interrupted(
    transaction: &mut Transaction<'_, Sqlite>,
    run_id: i64,
    now_ms: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE codex_inspection_runs SET status = 'interrupted', error = CASE WHEN error = '' THEN ? ELSE error END, \
         finished_at_ms = coalesce(finished_at_ms, ?), updated_at_ms = ? \
         WHERE id = ? AND status IN ('running', 'cancelling')",
    )
    .bind(reason)
    .bind(now_ms)
    .bind(now_ms)
    .bind(run_id)
    .execute(&mut **transaction)
    .await?;
    sqlx::query(
        "INSERT INTO codex_inspection_logs (run_id, level, message, detail, created_at_ms) \
         SELECT ?, 'warning', ?, '', ? WHERE changes() > 0",
    )
    .bind(run_id)
    .bind(reason)
    .bind(now_ms)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

impl InspectionStore for SqliteStore {
    async fn begin_run(
        &self,
        run: NewRun,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Result<Run, StartRefusal>, StoreError> {
        let map = |error| error::map(error, "start inspection run");
        let mut transaction = self.writer().begin().await.map_err(map)?;
        let lease: Option<(i64, i64)> = sqlx::query_as(
            "SELECT l.run_id, l.lease_expires_at_ms FROM codex_inspection_leases l \
             JOIN codex_inspection_runs r ON r.id = l.run_id \
             WHERE l.id = 1 AND r.status IN ('running', 'cancelling')",
        )
        .fetch_optional(&mut *transaction)
        .await
        .map_err(map)?;
        if let Some((active, expires_at)) = lease {
            if expires_at > now_ms {
                return Ok(Err(StartRefusal::AlreadyRunning));
            }
            mark_interrupted(
                &mut transaction,
                active,
                now_ms,
                "the run's lease expired (the server stopped or lost it); the inspection was interrupted",
            )
            .await
            .map_err(map)?;
        }
        if !run.trigger_key.is_empty() {
            let used: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM codex_inspection_runs WHERE trigger_key = ?",
            )
            .bind(&run.trigger_key)
            .fetch_one(&mut *transaction)
            .await
            .map_err(map)?;
            if used > 0 {
                return Ok(Err(StartRefusal::TriggerHandled));
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO codex_inspection_runs (trigger_type, trigger_key, status, started_at_ms, \
             settings_json, owner_id, created_at_ms, updated_at_ms) \
             VALUES (?, ?, 'running', ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&run.trigger_type)
        .bind(&run.trigger_key)
        .bind(now_ms)
        .bind(&run.settings_json)
        .bind(&run.owner_id)
        .bind(now_ms)
        .bind(now_ms)
        .fetch_one(&mut *transaction)
        .await
        .map_err(map)?;
        sqlx::query(
            "INSERT INTO codex_inspection_leases (id, run_id, owner_id, heartbeat_at_ms, lease_expires_at_ms) \
             VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, \
             owner_id = excluded.owner_id, heartbeat_at_ms = excluded.heartbeat_at_ms, \
             lease_expires_at_ms = excluded.lease_expires_at_ms",
        )
        .bind(id)
        .bind(&run.owner_id)
        .bind(now_ms)
        .bind(now_ms + lease_ms)
        .execute(&mut *transaction)
        .await
        .map_err(map)?;
        let stored = run_by_id(&mut transaction, id)
            .await
            .map_err(map)?
            .ok_or_else(|| StoreError::NotFound("inspection run".into()))?;
        transaction.commit().await.map_err(map)?;
        Ok(Ok(stored))
    }

    async fn renew_lease(
        &self,
        run_id: i64,
        owner_id: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        sqlx::query(
            "UPDATE codex_inspection_leases SET heartbeat_at_ms = ?, lease_expires_at_ms = ? \
             WHERE id = 1 AND run_id = ? AND owner_id = ?",
        )
        .bind(now_ms)
        .bind(now_ms + lease_ms)
        .bind(run_id)
        .bind(owner_id)
        .execute(self.writer())
        .await
        .map(|result| result.rows_affected() > 0)
        .map_err(|error| error::map(error, "renew inspection lease"))
    }

    async fn lease(&self) -> Result<Option<Lease>, StoreError> {
        let row: Option<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT run_id, owner_id, heartbeat_at_ms, lease_expires_at_ms FROM codex_inspection_leases WHERE id = 1",
        )
        .fetch_optional(self.reader())
        .await
        .map_err(|error| error::map(error, "read inspection lease"))?;
        Ok(row.map(
            |(run_id, owner_id, heartbeat_at_ms, lease_expires_at_ms)| Lease {
                run_id,
                owner_id,
                heartbeat_at_ms,
                lease_expires_at_ms,
            },
        ))
    }

    async fn set_run_status(
        &self,
        run_id: i64,
        status: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE codex_inspection_runs SET status = ?, updated_at_ms = ? \
             WHERE id = ? AND status IN ('running', 'cancelling')",
        )
        .bind(status)
        .bind(now_ms)
        .bind(run_id)
        .execute(self.writer())
        .await
        .map(|_| ())
        .map_err(|error| error::map(error, "update inspection run"))
    }

    async fn finish_run(&self, run: Run) -> Result<(), StoreError> {
        let map = |error| error::map(error, "finish inspection run");
        let mut transaction = self.writer().begin().await.map_err(map)?;
        let counts = run.counts;
        sqlx::query(
            "UPDATE codex_inspection_runs SET status = ?, finished_at_ms = ?, total_files = ?, \
             probe_set_count = ?, sampled_count = ?, disabled_count = ?, enabled_count = ?, \
             delete_count = ?, disable_count = ?, enable_count = ?, reauth_count = ?, keep_count = ?, \
             error = ?, updated_at_ms = ? WHERE id = ?",
        )
        .bind(&run.status)
        .bind(run.finished_at_ms)
        .bind(counts.total_files)
        .bind(counts.probe_set_count)
        .bind(counts.sampled_count)
        .bind(counts.disabled_count)
        .bind(counts.enabled_count)
        .bind(counts.delete_count)
        .bind(counts.disable_count)
        .bind(counts.enable_count)
        .bind(counts.reauth_count)
        .bind(counts.keep_count)
        .bind(&run.error)
        .bind(run.updated_at_ms)
        .bind(run.id)
        .execute(&mut *transaction)
        .await
        .map_err(map)?;
        sqlx::query(
            "DELETE FROM codex_inspection_leases WHERE id = 1 AND run_id = ? AND owner_id = ?",
        )
        .bind(run.id)
        .bind(&run.owner_id)
        .execute(&mut *transaction)
        .await
        .map_err(map)?;
        transaction.commit().await.map_err(map)
    }

    async fn interrupt_stale_runs(&self, now_ms: i64) -> Result<Vec<i64>, StoreError> {
        let map = |error| error::map(error, "recover inspection runs");
        let mut transaction = self.writer().begin().await.map_err(map)?;
        let stale: Vec<i64> = sqlx::query_scalar(
            "SELECT r.id FROM codex_inspection_runs r WHERE r.status IN ('running', 'cancelling') \
             AND NOT EXISTS (SELECT 1 FROM codex_inspection_leases l WHERE l.id = 1 \
             AND l.run_id = r.id AND l.lease_expires_at_ms > ?)",
        )
        .bind(now_ms)
        .fetch_all(&mut *transaction)
        .await
        .map_err(map)?;
        for id in &stale {
            mark_interrupted(
                &mut transaction,
                *id,
                now_ms,
                "the server restarted or the run's lease expired; the inspection was interrupted",
            )
            .await
            .map_err(map)?;
        }
        transaction.commit().await.map_err(map)?;
        Ok(stale)
    }

    async fn save_result(&self, result: RunResult) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO codex_inspection_results (run_id, account_key, file_name, display_account, \
             account_snapshot, auth_index, account_id, provider, disabled, status, state, action, \
             action_reason, action_status, executed_action, action_error, status_code, used_percent, \
             is_quota, auto_recover_eligible, error, plan_type, quota_windows_json, \
             quota_inventory_observed, error_kind, error_detail, created_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (run_id, account_key) DO UPDATE SET file_name = excluded.file_name, \
             display_account = excluded.display_account, account_snapshot = excluded.account_snapshot, \
             auth_index = excluded.auth_index, account_id = excluded.account_id, provider = excluded.provider, \
             disabled = excluded.disabled, status = excluded.status, state = excluded.state, \
             action = excluded.action, action_reason = excluded.action_reason, \
             action_status = excluded.action_status, executed_action = excluded.executed_action, \
             action_error = excluded.action_error, status_code = excluded.status_code, \
             used_percent = excluded.used_percent, is_quota = excluded.is_quota, \
             auto_recover_eligible = excluded.auto_recover_eligible, error = excluded.error, \
             plan_type = excluded.plan_type, quota_windows_json = excluded.quota_windows_json, \
             quota_inventory_observed = excluded.quota_inventory_observed, \
             error_kind = excluded.error_kind, error_detail = excluded.error_detail \
             RETURNING id",
        )
        .bind(result.run_id)
        .bind(&result.account_key)
        .bind(&result.file_name)
        .bind(&result.display_account)
        .bind(&result.account_snapshot)
        .bind(&result.auth_index)
        .bind(&result.account_id)
        .bind(&result.provider)
        .bind(result.disabled)
        .bind(&result.status)
        .bind(&result.state)
        .bind(&result.action)
        .bind(&result.action_reason)
        .bind(&result.action_status)
        .bind(&result.executed_action)
        .bind(&result.action_error)
        .bind(result.status_code)
        .bind(result.used_percent)
        .bind(result.is_quota)
        .bind(result.auto_recover_eligible)
        .bind(&result.error)
        .bind(&result.plan_type)
        .bind(&result.quota_windows_json)
        .bind(result.quota_inventory_observed)
        .bind(&result.error_kind)
        .bind(&result.error_detail)
        .bind(result.created_at_ms)
        // All rows, not `fetch_one`: the autocommit statement must run to completion so
        // that a failed commit (a full disk) is reported instead of lost at its reset.
        .fetch_all(self.writer())
        .await
        .map_err(|error| error::map(error, "save inspection result"))?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::NotFound("save inspection result".to_string()))
    }

    async fn append_log(&self, log: RunLog) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO codex_inspection_logs (run_id, level, message, detail, created_at_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(log.run_id)
        .bind(&log.level)
        .bind(&log.message)
        .bind(&log.detail)
        .bind(log.created_at_ms)
        .execute(self.writer())
        .await
        .map(|_| ())
        .map_err(|error| error::map(error, "append inspection log"))
    }

    async fn runs(&self, limit: u32) -> Result<Vec<Run>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM codex_inspection_runs ORDER BY started_at_ms DESC, id DESC LIMIT ?"
        );
        let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(self.reader())
            .await
            .map_err(|error| error::map(error, "read inspection runs"))?;
        Ok(rows.into_iter().map(Run::from).collect())
    }

    async fn run(&self, id: i64) -> Result<Option<Run>, StoreError> {
        let mut connection = self
            .writer()
            .acquire()
            .await
            .map_err(|error| error::map(error, "read inspection run"))?;
        run_by_id(&mut connection, id)
            .await
            .map_err(|error| error::map(error, "read inspection run"))
    }

    async fn results(&self, run_id: i64) -> Result<Vec<RunResult>, StoreError> {
        let sql = format!(
            "SELECT {RESULT_COLUMNS} FROM codex_inspection_results WHERE run_id = ? \
             ORDER BY file_name, display_account, id"
        );
        let rows: Vec<ResultRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_all(self.reader())
            .await
            .map_err(|error| error::map(error, "read inspection results"))?;
        Ok(rows.into_iter().map(RunResult::from).collect())
    }

    async fn logs(&self, run_id: i64) -> Result<Vec<RunLog>, StoreError> {
        let rows: Vec<(i64, i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT id, run_id, level, message, detail, created_at_ms FROM codex_inspection_logs \
             WHERE run_id = ? ORDER BY created_at_ms, id",
        )
        .bind(run_id)
        .fetch_all(self.reader())
        .await
        .map_err(|error| error::map(error, "read inspection logs"))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, run_id, level, message, detail, created_at_ms)| RunLog {
                    id,
                    run_id,
                    level,
                    message,
                    detail,
                    created_at_ms,
                },
            )
            .collect())
    }

    async fn last_scheduled_run(&self) -> Result<Option<Run>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM codex_inspection_runs WHERE trigger_type = 'scheduled' \
             ORDER BY started_at_ms DESC, id DESC LIMIT 1"
        );
        Ok(sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql))
            .fetch_optional(self.reader())
            .await
            .map_err(|error| error::map(error, "read inspection runs"))?
            .map(Run::from))
    }

    async fn ownerships(&self) -> Result<Vec<Ownership>, StoreError> {
        let rows: Vec<(String, String, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT auth_file_name, provider, auth_index, account_id, account_snapshot, run_id, created_at_ms \
             FROM codex_inspection_disable_ownership",
        )
        .fetch_all(self.reader())
        .await
        .map_err(|error| error::map(error, "read inspection ownership"))?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    auth_file_name,
                    provider,
                    auth_index,
                    account_id,
                    account_snapshot,
                    run_id,
                    created_at_ms,
                )| {
                    Ownership {
                        auth_file_name,
                        provider,
                        auth_index,
                        account_id,
                        account_snapshot,
                        run_id,
                        created_at_ms,
                    }
                },
            )
            .collect())
    }

    async fn add_ownership(&self, ownership: Ownership) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO codex_inspection_disable_ownership (auth_file_name, provider, \
             auth_index, account_id, account_snapshot, run_id, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&ownership.auth_file_name)
        .bind(&ownership.provider)
        .bind(&ownership.auth_index)
        .bind(&ownership.account_id)
        .bind(&ownership.account_snapshot)
        .bind(ownership.run_id)
        .bind(ownership.created_at_ms)
        .execute(self.writer())
        .await
        .map(|_| ())
        .map_err(|error| error::map(error, "store inspection ownership"))
    }

    async fn remove_ownership(
        &self,
        file: &str,
        auth_index: Option<&str>,
    ) -> Result<u64, StoreError> {
        sqlx::query(
            "DELETE FROM codex_inspection_disable_ownership WHERE lower(auth_file_name) = lower(?) \
             AND (? = '' OR auth_index = '' OR auth_index = ?)",
        )
        .bind(file)
        .bind(auth_index.unwrap_or(""))
        .bind(auth_index.unwrap_or(""))
        .execute(self.writer())
        .await
        .map(|result| result.rows_affected())
        .map_err(|error| error::map(error, "remove inspection ownership"))
    }

    async fn prune_runs(&self, keep: u32, before_ms: i64) -> Result<u64, StoreError> {
        sqlx::query(
            "DELETE FROM codex_inspection_runs WHERE status NOT IN ('running', 'cancelling') AND ( \
             started_at_ms < ? OR id NOT IN (SELECT id FROM codex_inspection_runs \
             ORDER BY started_at_ms DESC, id DESC LIMIT ?))",
        )
        .bind(before_ms)
        .bind(i64::from(keep))
        .execute(self.writer())
        .await
        .map(|result| result.rows_affected())
        .map_err(|error| error::map(error, "prune inspection runs"))
    }
}
