//! The automation tables behind [`CooldownStore`], [`CandidateStore`] and [`AuditStore`]:
//! `quota_cooldowns`, `account_action_candidates` and `automation_audit` (migration
//! 0060), and the adoption of the Go server's cooldowns and candidates.

use cpamp_domain::StoreError;
use cpamp_domain::automation::store::{
    AuditEntry, AuditQuery, AuditStore, Candidate, CandidateHit, CandidateStore, Cooldown,
    CooldownEnd, CooldownStore, NewCooldown,
};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::{SqliteStore, error};

/// Longest error or detail text kept per row.
const TEXT_LIMIT: usize = 2048;

const COOLDOWN_COLUMNS: &str = "id, auth_file_name, auth_index, account_snapshot, provider, owner, \
    reason_code, window_kind, evidence_json, recover_at_ms, event_hash, status, disabled_at_ms, \
    recovered_at_ms, last_error, created_at_ms, updated_at_ms";

#[derive(sqlx::FromRow)]
struct CooldownRow {
    id: i64,
    auth_file_name: String,
    auth_index: String,
    account_snapshot: String,
    provider: String,
    owner: String,
    reason_code: String,
    window_kind: String,
    evidence_json: String,
    recover_at_ms: i64,
    event_hash: String,
    status: String,
    disabled_at_ms: i64,
    recovered_at_ms: Option<i64>,
    last_error: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<CooldownRow> for Cooldown {
    fn from(row: CooldownRow) -> Cooldown {
        Cooldown {
            id: row.id,
            auth_file_name: row.auth_file_name,
            auth_index: row.auth_index,
            account_snapshot: row.account_snapshot,
            provider: row.provider,
            owner: row.owner,
            reason_code: row.reason_code,
            window_kind: row.window_kind,
            evidence_json: row.evidence_json,
            recover_at_ms: row.recover_at_ms,
            event_hash: row.event_hash,
            status: row.status,
            disabled_at_ms: row.disabled_at_ms,
            recovered_at_ms: row.recovered_at_ms,
            last_error: row.last_error,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }
    }
}

fn truncate(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

fn first<'a>(preferred: &'a str, fallback: &'a str) -> &'a str {
    if preferred.trim().is_empty() {
        fallback
    } else {
        preferred
    }
}

/// The active cooldown of the same file, owner and credential: by auth index when one is
/// known, else by provider and account; a row without an index also matches a new one
/// with the same provider and account (so richer identities merge into it).
async fn matching_cooldown(
    connection: &mut SqliteConnection,
    cooldown: &NewCooldown,
) -> Result<Option<CooldownRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COOLDOWN_COLUMNS} FROM quota_cooldowns WHERE status = 'active' \
         AND auth_file_name = ? AND owner = ? AND ( \
            (? <> '' AND auth_index = ?) \
            OR (auth_index = '' AND provider <> '' AND account_snapshot <> '' \
                AND provider = ? AND account_snapshot = ?) \
         ) ORDER BY (auth_index = ?) DESC, id LIMIT 1"
    );
    sqlx::query_as::<_, CooldownRow>(sqlx::AssertSqlSafe(sql))
        .bind(&cooldown.auth_file_name)
        .bind(&cooldown.owner)
        .bind(&cooldown.auth_index)
        .bind(&cooldown.auth_index)
        .bind(&cooldown.provider)
        .bind(&cooldown.account_snapshot)
        .bind(&cooldown.auth_index)
        .fetch_optional(connection)
        .await
}

async fn cooldown_by_id(
    connection: &mut SqliteConnection,
    id: i64,
) -> Result<CooldownRow, sqlx::Error> {
    let sql = format!("SELECT {COOLDOWN_COLUMNS} FROM quota_cooldowns WHERE id = ?");
    sqlx::query_as::<_, CooldownRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_one(connection)
        .await
}

impl CooldownStore for SqliteStore {
    async fn upsert_cooldown(
        &self,
        cooldown: NewCooldown,
        now_ms: i64,
    ) -> Result<Cooldown, StoreError> {
        let map = |error| error::map(error, "store quota cooldown");
        let mut transaction = self.writer().begin().await.map_err(map)?;
        let id = match matching_cooldown(&mut transaction, &cooldown)
            .await
            .map_err(map)?
        {
            Some(existing) => {
                // The later reset wins, and its reason and evidence with it.
                let newer = cooldown.recover_at_ms >= existing.recover_at_ms;
                let pick = |new: &str, old: &str| -> String {
                    if newer {
                        first(new, old).to_string()
                    } else {
                        first(old, new).to_string()
                    }
                };
                sqlx::query(
                    "UPDATE quota_cooldowns SET auth_index = ?, account_snapshot = ?, provider = ?, \
                     reason_code = ?, window_kind = ?, evidence_json = ?, recover_at_ms = ?, \
                     event_hash = ?, last_error = '', updated_at_ms = ? WHERE id = ?",
                )
                .bind(first(&cooldown.auth_index, &existing.auth_index))
                .bind(first(&cooldown.account_snapshot, &existing.account_snapshot))
                .bind(first(&cooldown.provider, &existing.provider))
                .bind(pick(&cooldown.reason_code, &existing.reason_code))
                .bind(pick(&cooldown.window_kind, &existing.window_kind))
                .bind(pick(&cooldown.evidence_json, &existing.evidence_json))
                .bind(cooldown.recover_at_ms.max(existing.recover_at_ms))
                .bind(pick(&cooldown.event_hash, &existing.event_hash))
                .bind(now_ms)
                .bind(existing.id)
                .execute(&mut *transaction)
                .await
                .map_err(map)?;
                existing.id
            }
            None => sqlx::query_scalar(
                "INSERT INTO quota_cooldowns (auth_file_name, auth_index, account_snapshot, provider, \
                 owner, reason_code, window_kind, evidence_json, recover_at_ms, event_hash, status, \
                 disabled_at_ms, created_at_ms, updated_at_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?) RETURNING id",
            )
            .bind(&cooldown.auth_file_name)
            .bind(&cooldown.auth_index)
            .bind(&cooldown.account_snapshot)
            .bind(&cooldown.provider)
            .bind(&cooldown.owner)
            .bind(&cooldown.reason_code)
            .bind(&cooldown.window_kind)
            .bind(&cooldown.evidence_json)
            .bind(cooldown.recover_at_ms)
            .bind(&cooldown.event_hash)
            .bind(cooldown.disabled_at_ms)
            .bind(now_ms)
            .bind(now_ms)
            .fetch_one(&mut *transaction)
            .await
            .map_err(map)?,
        };
        let row = cooldown_by_id(&mut transaction, id).await.map_err(map)?;
        transaction.commit().await.map_err(map)?;
        Ok(row.into())
    }

    async fn active_cooldowns(&self) -> Result<Vec<Cooldown>, StoreError> {
        let sql = format!(
            "SELECT {COOLDOWN_COLUMNS} FROM quota_cooldowns WHERE status = 'active' \
             ORDER BY recover_at_ms, id"
        );
        let rows: Vec<CooldownRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.reader())
            .await
            .map_err(|error| error::map(error, "read quota cooldowns"))?;
        Ok(rows.into_iter().map(Cooldown::from).collect())
    }

    async fn due_cooldowns(&self, now_ms: i64, limit: u32) -> Result<Vec<Cooldown>, StoreError> {
        let sql = format!(
            "SELECT {COOLDOWN_COLUMNS} FROM quota_cooldowns WHERE status = 'active' \
             AND recover_at_ms <= ? ORDER BY recover_at_ms, id LIMIT ?"
        );
        let rows: Vec<CooldownRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(self.writer())
            .await
            .map_err(|error| error::map(error, "read due quota cooldowns"))?;
        Ok(rows.into_iter().map(Cooldown::from).collect())
    }

    async fn end_cooldown(
        &self,
        id: i64,
        end: CooldownEnd,
        note: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let recovered_at = (end == CooldownEnd::Recovered).then_some(now_ms);
        let result = sqlx::query(
            "UPDATE quota_cooldowns SET status = ?, recovered_at_ms = ?, last_error = ?, \
             updated_at_ms = ? WHERE id = ? AND status = 'active'",
        )
        .bind(end.as_str())
        .bind(recovered_at)
        .bind(truncate(note, TEXT_LIMIT))
        .bind(now_ms)
        .bind(id)
        .execute(self.writer())
        .await
        .map_err(|error| error::map(error, "end quota cooldown"))?;
        Ok(result.rows_affected() > 0)
    }

    async fn record_cooldown_error(
        &self,
        id: i64,
        message: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE quota_cooldowns SET last_error = ?, updated_at_ms = ? WHERE id = ?")
            .bind(truncate(message, TEXT_LIMIT))
            .bind(now_ms)
            .bind(id)
            .execute(self.writer())
            .await
            .map(|_| ())
            .map_err(|error| error::map(error, "record quota cooldown error"))
    }

    async fn prune_cooldowns(&self, before_ms: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM quota_cooldowns WHERE status <> 'active' AND updated_at_ms < ?")
            .bind(before_ms)
            .execute(self.writer())
            .await
            .map(|result| result.rows_affected())
            .map_err(|error| error::map(error, "prune quota cooldowns"))
    }
}

const CANDIDATE_COLUMNS: &str = "id, action_type, status, provider, auth_file_name, auth_index, \
    account_snapshot, account_id_snapshot, auth_label, reason_code, reason, auto_disable_eligible, \
    auto_disabled_at_ms, evidence_json, last_error, first_seen_at_ms, last_seen_at_ms, hit_count, \
    created_at_ms, updated_at_ms";

#[derive(sqlx::FromRow)]
struct CandidateRow {
    id: i64,
    action_type: String,
    status: String,
    provider: String,
    auth_file_name: String,
    auth_index: String,
    account_snapshot: String,
    account_id_snapshot: String,
    auth_label: String,
    reason_code: String,
    reason: String,
    auto_disable_eligible: bool,
    auto_disabled_at_ms: Option<i64>,
    evidence_json: String,
    last_error: String,
    first_seen_at_ms: i64,
    last_seen_at_ms: i64,
    hit_count: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<CandidateRow> for Candidate {
    fn from(row: CandidateRow) -> Candidate {
        Candidate {
            id: row.id,
            action_type: row.action_type,
            status: row.status,
            provider: row.provider,
            auth_file_name: row.auth_file_name,
            auth_index: row.auth_index,
            account_snapshot: row.account_snapshot,
            account_id_snapshot: row.account_id_snapshot,
            auth_label: row.auth_label,
            reason_code: row.reason_code,
            reason: row.reason,
            auto_disable_eligible: row.auto_disable_eligible,
            auto_disabled_at_ms: row.auto_disabled_at_ms,
            evidence_json: row.evidence_json,
            last_error: row.last_error,
            first_seen_at_ms: row.first_seen_at_ms,
            last_seen_at_ms: row.last_seen_at_ms,
            hit_count: row.hit_count,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }
    }
}

async fn candidate_by_id(
    connection: &mut SqliteConnection,
    id: i64,
) -> Result<Option<CandidateRow>, sqlx::Error> {
    let sql = format!("SELECT {CANDIDATE_COLUMNS} FROM account_action_candidates WHERE id = ?");
    sqlx::query_as::<_, CandidateRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(connection)
        .await
}

/// The pending candidate a hit belongs to: same file, action and reason, and the same
/// credential (auth index, else account id and provider, else provider and account); a
/// row that lacks the index or account id also takes a richer hit of the same account.
async fn matching_candidate(
    connection: &mut SqliteConnection,
    hit: &CandidateHit,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM account_action_candidates WHERE status = 'pending' \
         AND auth_file_name = ?1 AND action_type = ?2 AND reason_code = ?3 AND ( \
            (?4 <> '' AND auth_index = ?4) \
            OR (?4 = '' AND ?5 <> '' AND account_id_snapshot = ?5 AND provider = ?6) \
            OR (?4 = '' AND ?5 = '' AND account_snapshot = ?7 AND provider = ?6) \
            OR (auth_index = '' AND ?5 <> '' AND account_id_snapshot = ?5 AND provider = ?6) \
            OR (auth_index = '' AND account_id_snapshot = '' AND account_snapshot <> '' \
                AND account_snapshot = ?7 AND provider = ?6) \
         ) ORDER BY (auth_index = ?4) DESC, id LIMIT 1",
    )
    .bind(&hit.auth_file_name)
    .bind(&hit.action_type)
    .bind(&hit.reason_code)
    .bind(&hit.auth_index)
    .bind(&hit.account_id_snapshot)
    .bind(&hit.provider)
    .bind(&hit.account_snapshot)
    .fetch_optional(connection)
    .await
}

impl CandidateStore for SqliteStore {
    async fn record_candidate_hit(
        &self,
        hit: CandidateHit,
        now_ms: i64,
    ) -> Result<Candidate, StoreError> {
        let map = |error| error::map(error, "store account action candidate");
        let mut transaction = self.writer().begin().await.map_err(map)?;
        let id = match matching_candidate(&mut transaction, &hit)
            .await
            .map_err(map)?
        {
            Some(id) => {
                // Non-empty new values win; the last sighting never moves backwards.
                sqlx::query(
                    "UPDATE account_action_candidates SET \
                     provider = CASE WHEN ?1 <> '' THEN ?1 ELSE provider END, \
                     auth_index = CASE WHEN ?2 <> '' THEN ?2 ELSE auth_index END, \
                     account_snapshot = CASE WHEN ?3 <> '' THEN ?3 ELSE account_snapshot END, \
                     account_id_snapshot = CASE WHEN ?4 <> '' THEN ?4 ELSE account_id_snapshot END, \
                     auth_label = CASE WHEN ?5 <> '' THEN ?5 ELSE auth_label END, \
                     reason = CASE WHEN ?6 <> '' THEN ?6 ELSE reason END, \
                     evidence_json = CASE WHEN ?7 <> '' THEN ?7 ELSE evidence_json END, \
                     auto_disable_eligible = MAX(auto_disable_eligible, ?8), \
                     last_error = '', last_seen_at_ms = MAX(last_seen_at_ms, ?9), \
                     hit_count = hit_count + 1, updated_at_ms = ?10 WHERE id = ?11",
                )
                .bind(&hit.provider)
                .bind(&hit.auth_index)
                .bind(&hit.account_snapshot)
                .bind(&hit.account_id_snapshot)
                .bind(&hit.auth_label)
                .bind(&hit.reason)
                .bind(&hit.evidence_json)
                .bind(hit.auto_disable_eligible)
                .bind(hit.seen_at_ms)
                .bind(now_ms)
                .bind(id)
                .execute(&mut *transaction)
                .await
                .map_err(map)?;
                id
            }
            None => sqlx::query_scalar(
                "INSERT INTO account_action_candidates (action_type, status, provider, auth_file_name, \
                 auth_index, account_snapshot, account_id_snapshot, auth_label, reason_code, reason, \
                 auto_disable_eligible, evidence_json, first_seen_at_ms, last_seen_at_ms, hit_count, \
                 created_at_ms, updated_at_ms) \
                 VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING id",
            )
            .bind(&hit.action_type)
            .bind(&hit.provider)
            .bind(&hit.auth_file_name)
            .bind(&hit.auth_index)
            .bind(&hit.account_snapshot)
            .bind(&hit.account_id_snapshot)
            .bind(&hit.auth_label)
            .bind(&hit.reason_code)
            .bind(&hit.reason)
            .bind(hit.auto_disable_eligible)
            .bind(&hit.evidence_json)
            .bind(hit.seen_at_ms)
            .bind(hit.seen_at_ms)
            .bind(now_ms)
            .bind(now_ms)
            .fetch_one(&mut *transaction)
            .await
            .map_err(map)?,
        };
        let row = candidate_by_id(&mut transaction, id)
            .await
            .map_err(map)?
            .ok_or_else(|| StoreError::NotFound("account action candidate".into()))?;
        transaction.commit().await.map_err(map)?;
        Ok(row.into())
    }

    async fn candidates(
        &self,
        status: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Candidate>, i64), StoreError> {
        let map = |error| error::map(error, "read account action candidates");
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT {CANDIDATE_COLUMNS} FROM account_action_candidates"
        ));
        if let Some(status) = status {
            builder
                .push(" WHERE status = ")
                .push_bind(status.to_string());
        }
        builder
            .push(" ORDER BY (status = 'pending') DESC, last_seen_at_ms DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows: Vec<CandidateRow> = builder
            .build_query_as()
            .fetch_all(self.reader())
            .await
            .map_err(map)?;
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM account_action_candidates WHERE status = 'pending'",
        )
        .fetch_one(self.reader())
        .await
        .map_err(map)?;
        Ok((rows.into_iter().map(Candidate::from).collect(), pending))
    }

    async fn candidate(&self, id: i64) -> Result<Option<Candidate>, StoreError> {
        let mut connection = self
            .reader()
            .acquire()
            .await
            .map_err(|error| error::map(error, "read account action candidate"))?;
        Ok(candidate_by_id(&mut connection, id)
            .await
            .map_err(|error| error::map(error, "read account action candidate"))?
            .map(Candidate::from))
    }

    async fn finish_candidate(
        &self,
        id: i64,
        status: &str,
        now_ms: i64,
    ) -> Result<Option<Candidate>, StoreError> {
        let map = |error| error::map(error, "update account action candidate");
        let mut transaction = self.writer().begin().await.map_err(map)?;
        let updated = sqlx::query(
            "UPDATE account_action_candidates SET status = ?, last_error = '', updated_at_ms = ? \
             WHERE id = ? AND status = 'pending'",
        )
        .bind(status)
        .bind(now_ms)
        .bind(id)
        .execute(&mut *transaction)
        .await
        .map_err(map)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let row = candidate_by_id(&mut transaction, id).await.map_err(map)?;
        transaction.commit().await.map_err(map)?;
        Ok(row.map(Candidate::from))
    }

    async fn mark_candidate_auto_disabled(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE account_action_candidates SET auto_disabled_at_ms = ?, last_error = '', \
             updated_at_ms = ? WHERE id = ? AND status = 'pending'",
        )
        .bind(at_ms)
        .bind(at_ms)
        .bind(id)
        .execute(self.writer())
        .await
        .map(|_| ())
        .map_err(|error| error::map(error, "mark account action candidate"))
    }

    async fn set_candidate_error(
        &self,
        id: i64,
        message: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE account_action_candidates SET last_error = ?, updated_at_ms = ? WHERE id = ?",
        )
        .bind(truncate(message, TEXT_LIMIT))
        .bind(now_ms)
        .bind(id)
        .execute(self.writer())
        .await
        .map(|_| ())
        .map_err(|error| error::map(error, "record account action candidate error"))
    }

    async fn prune_candidates(&self, before_ms: i64) -> Result<u64, StoreError> {
        sqlx::query(
            "DELETE FROM account_action_candidates WHERE status <> 'pending' AND updated_at_ms < ?",
        )
        .bind(before_ms)
        .execute(self.writer())
        .await
        .map(|result| result.rows_affected())
        .map_err(|error| error::map(error, "prune account action candidates"))
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at_ms: i64,
    actor: String,
    action: String,
    auth_file_name: String,
    auth_index: String,
    provider: String,
    account: String,
    reason: String,
    outcome: String,
    detail: String,
}

impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: AuditEntry) -> Result<i64, StoreError> {
        // Run to completion, not read with `RETURNING`: an autocommit statement read
        // only to its first row commits at its reset, whose failure (a full disk) is
        // not reported, so the entry would count as written while SQLite rolled it back.
        sqlx::query(
            "INSERT INTO automation_audit (at_ms, actor, action, auth_file_name, auth_index, \
             provider, account, reason, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(entry.at_ms)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.auth_file_name)
        .bind(&entry.auth_index)
        .bind(&entry.provider)
        .bind(&entry.account)
        .bind(truncate(&entry.reason, TEXT_LIMIT))
        .bind(&entry.outcome)
        .bind(truncate(&entry.detail, TEXT_LIMIT))
        .execute(self.writer())
        .await
        .map(|done| done.last_insert_rowid())
        .map_err(|error| error::map(error, "append automation audit"))
    }

    async fn audit_entries(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let mut builder: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, at_ms, actor, action, auth_file_name, auth_index, provider, account, \
             reason, outcome, detail FROM automation_audit WHERE 1 = 1",
        );
        if let Some(since) = query.since_ms {
            builder.push(" AND at_ms >= ").push_bind(since);
        }
        if let Some(actor) = query.actor {
            builder.push(" AND actor = ").push_bind(actor);
        }
        if let Some(file) = query.auth_file_name {
            builder.push(" AND auth_file_name = ").push_bind(file);
        }
        if let Some(before) = query.before_id {
            builder.push(" AND id < ").push_bind(before);
        }
        builder
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows: Vec<AuditRow> = builder
            .build_query_as()
            .fetch_all(self.reader())
            .await
            .map_err(|error| error::map(error, "read automation audit"))?;
        Ok(rows
            .into_iter()
            .map(|row| AuditEntry {
                id: row.id,
                at_ms: row.at_ms,
                actor: row.actor,
                action: row.action,
                auth_file_name: row.auth_file_name,
                auth_index: row.auth_index,
                provider: row.provider,
                account: row.account,
                reason: row.reason,
                outcome: row.outcome,
                detail: row.detail,
            })
            .collect())
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM automation_audit WHERE at_ms < ?")
            .bind(before_ms)
            .execute(self.writer())
            .await
            .map(|result| result.rows_affected())
            .map_err(|error| error::map(error, "prune automation audit"))
    }
}

/// Copies the Go server's active cooldowns and open candidates (moved aside under
/// `legacy_go_`) so restores and pending issues survive the switch; then drops them.
pub(crate) async fn adopt_go_tables(connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let exists = |name: &'static str| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        )
        .bind(name)
    };
    if exists("legacy_go_quota_cooldowns")
        .fetch_one(&mut *connection)
        .await?
        > 0
    {
        sqlx::query(
            "INSERT OR IGNORE INTO quota_cooldowns (auth_file_name, auth_index, account_snapshot, provider, \
             reason_code, window_kind, evidence_json, recover_at_ms, owner, event_hash, status, \
             disabled_at_ms, recovered_at_ms, last_error, created_at_ms, updated_at_ms) \
             SELECT auth_file_name, coalesce(auth_index, ''), coalesce(account_snapshot, ''), \
             coalesce(provider, ''), coalesce(reason_code, ''), coalesce(window_kind, ''), \
             coalesce(evidence_json, ''), recover_at_ms, owner, coalesce(event_hash, ''), \
             CASE WHEN coalesce(pre_disabled_state, 0) <> 0 AND status = 'active' THEN 'skipped' ELSE status END, \
             coalesce(disabled_at_ms, created_at_ms), recovered_at_ms, coalesce(last_error, ''), \
             created_at_ms, updated_at_ms FROM legacy_go_quota_cooldowns ORDER BY id",
        )
        .execute(&mut *connection)
        .await?;
        sqlx::query("DROP TABLE legacy_go_quota_cooldowns")
            .execute(&mut *connection)
            .await?;
    }
    if exists("legacy_go_account_action_candidates")
        .fetch_one(&mut *connection)
        .await?
        > 0
    {
        sqlx::query(
            "INSERT OR IGNORE INTO account_action_candidates (action_type, status, provider, auth_file_name, \
             auth_index, account_snapshot, account_id_snapshot, auth_label, reason_code, reason, \
             auto_disable_eligible, auto_disabled_at_ms, evidence_json, last_error, first_seen_at_ms, \
             last_seen_at_ms, hit_count, created_at_ms, updated_at_ms) \
             SELECT action_type, status, coalesce(provider, ''), auth_file_name, coalesce(auth_index, ''), \
             coalesce(account_snapshot, ''), coalesce(account_id_snapshot, ''), coalesce(auth_label, ''), \
             coalesce(reason_code, ''), coalesce(reason, ''), coalesce(auto_disable_eligible, 0), \
             auto_disabled_at_ms, coalesce(evidence_json, ''), coalesce(last_error, ''), \
             first_seen_at_ms, last_seen_at_ms, coalesce(hit_count, 1), created_at_ms, updated_at_ms \
             FROM legacy_go_account_action_candidates ORDER BY id",
        )
        .execute(&mut *connection)
        .await?;
        sqlx::query("DROP TABLE legacy_go_account_action_candidates")
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}
