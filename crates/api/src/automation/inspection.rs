//! Server inspection (automation spec §5): probes Codex (and xAI) credentials through
//! CPA's `api-call`, reports each account's state and a suggested action, and can act on
//! the suggestions.
//!
//! - One run at a time: an in-process slot refuses a second trigger at once, and the
//!   database lease (30 s, renewed every 7.5 s) keeps a run owned by one process; a run
//!   whose lease is lost interrupts itself. At start, runs left active by a previous
//!   process are marked `interrupted` (this process holds the database lock, so their
//!   owner is gone).
//! - Cancel is honoured between probes: no new probe starts, the run ends `cancelled`.
//! - Scheduled runs (when enabled) are checked every 30 s; each interval bucket or time
//!   point runs at most once.
//! - Automatic actions follow `autoActionMode`; an automatic disable records ownership,
//!   and only owned credentials are re-enabled by `autoRecoverEnabled` (the ownership
//!   rule). Every change goes through the coordinator and the audit log.
//! - History: the newest 200 runs (and none older than 90 days) are kept.

use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web;
use cpamp_domain::automation::authfile::AuthFileEntry;
use cpamp_domain::automation::inspection::{
    Action, InspectionConfig, codex_inventory_observed, codex_quota_windows, decide_codex,
    decide_xai, inspection_observation, scheduled_trigger,
};
use cpamp_domain::automation::runs::{NewRun, Ownership, Run, RunLog, RunResult, StartRefusal};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::audit::{Actor, Note, Outcome, Subject};
use super::cooldowns::client;
use super::cpa::{ApiCall, CALL_TIMEOUT, CpaClient, ListedFile};
use super::gate::{self, Expected};
use crate::error::{ApiError, ErrorCode};
use crate::manager_config;
use crate::state::{AppState, Store};

/// How long a run's lease lasts without renewal.
pub const LEASE_MS: i64 = 30_000;
const RENEW_EVERY: Duration = Duration::from_millis(7_500);
/// How often the schedule is checked.
pub const SCHEDULER_TICK: Duration = Duration::from_secs(30);
const CODEX_USAGE_URL: &str = "https://chatgpt.com/backend-api/wham/usage";
const XAI_BILLING_URL: &str = "https://cli-chat-proxy.grok.com/v1/billing?format=credits";
/// Runs kept, and for how long.
const KEEP_RUNS: u32 = 200;
const RETENTION_MS: i64 = 90 * 24 * 60 * 60 * 1000;
/// Longest error body kept per result.
const BODY_LIMIT: usize = 2048;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The in-process side of inspection.
pub struct Inspector {
    owner_id: String,
    slot: Mutex<Slot>,
}

#[derive(Default)]
enum Slot {
    #[default]
    Free,
    /// A run is being started or manual actions run.
    Busy,
    Running {
        run_id: i64,
        cancel: watch::Sender<bool>,
    },
}

impl Default for Inspector {
    fn default() -> Inspector {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        Inspector {
            owner_id: format!(
                "{host}:{}:{}:{:08x}",
                std::process::id(),
                now_ms(),
                rand::random::<u32>()
            ),
            slot: Mutex::new(Slot::Free),
        }
    }
}

impl Inspector {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the slot for a start or manual actions; false when it is taken.
    fn reserve(&self) -> bool {
        let mut slot = self.slot();
        if matches!(*slot, Slot::Free) {
            *slot = Slot::Busy;
            true
        } else {
            false
        }
    }

    fn release(&self) {
        *self.slot() = Slot::Free;
    }

    /// The run this process is executing, if any.
    pub fn running(&self) -> Option<i64> {
        match &*self.slot() {
            Slot::Running { run_id, .. } => Some(*run_id),
            _ => None,
        }
    }

    /// This process's id as the owner of inspection runs and the run lease.
    pub fn owner_id(&self) -> &str {
        &self.owner_id
    }
}

fn conflict(message: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, ErrorCode::RequestFailed, message)
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "codex inspection run not found",
    )
}

/// The inspection configuration in effect.
pub async fn config<S: Store>(state: &AppState<S>) -> Result<InspectionConfig, ApiError> {
    let effective = manager_config::load(state).await?;
    Ok(InspectionConfig::from_stored(&effective.codex_inspection))
}

/// Starts a run in the background and returns it as just started.
pub async fn start<S: Store>(
    state: &web::Data<AppState<S>>,
    trigger_type: &str,
    trigger_key: &str,
) -> Result<Run, ApiError> {
    let inspector = &state.automation.inspector;
    if !inspector.reserve() {
        return Err(conflict("codex inspection is already running"));
    }
    let started = begin(state, trigger_type, trigger_key).await;
    match started {
        Ok((run, client, settings)) => {
            let (cancel, cancelled) = watch::channel(false);
            *inspector.slot() = Slot::Running {
                run_id: run.id,
                cancel,
            };
            let task_state = state.clone();
            let task_run = run.clone();
            tokio::spawn(async move {
                execute(&task_state, task_run, client, settings, cancelled).await;
                task_state.automation.inspector.release();
            });
            Ok(run)
        }
        Err(error) => {
            inspector.release();
            Err(error)
        }
    }
}

async fn begin<S: Store>(
    state: &AppState<S>,
    trigger_type: &str,
    trigger_key: &str,
) -> Result<(Run, CpaClient, InspectionConfig), ApiError> {
    let client = client(state).await.ok_or_else(ApiError::not_configured)?;
    let settings = config(state).await?;
    let new = NewRun {
        trigger_type: trigger_type.to_string(),
        trigger_key: trigger_key.to_string(),
        settings_json: settings.to_json().to_string(),
        owner_id: state.automation.inspector.owner_id.clone(),
    };
    match state.store.begin_run(new, now_ms(), LEASE_MS).await? {
        Ok(run) => Ok((run, client, settings)),
        Err(StartRefusal::AlreadyRunning) => Err(conflict("codex inspection is already running")),
        Err(StartRefusal::TriggerHandled) => {
            Err(conflict("codex inspection trigger already handled"))
        }
    }
}

/// Asks the run to stop; returns the run as it is then.
pub async fn cancel<S: Store>(state: &AppState<S>, run_id: i64) -> Result<Run, ApiError> {
    let run = state.store.run(run_id).await?.ok_or_else(not_found)?;
    match run.status.as_str() {
        "cancelling" | "cancelled" => return Ok(run),
        "running" => {}
        _ => return Err(conflict("codex inspection run cannot be cancelled")),
    }
    let signalled = match &*state.automation.inspector.slot() {
        Slot::Running {
            run_id: active,
            cancel,
        } if *active == run_id => {
            let _ = cancel.send(true);
            true
        }
        _ => false,
    };
    if !signalled {
        return Err(conflict(
            "codex inspection run is owned by another instance",
        ));
    }
    state
        .store
        .set_run_status(run_id, "cancelling", now_ms())
        .await?;
    log(state, run_id, "warning", "cancel requested", None).await;
    state.store.run(run_id).await?.ok_or_else(not_found)
}

async fn log<S: Store>(
    state: &AppState<S>,
    run_id: i64,
    level: &str,
    message: &str,
    detail: Option<Value>,
) {
    let entry = RunLog {
        id: 0,
        run_id,
        level: level.to_string(),
        message: message.to_string(),
        detail: detail
            .map(|detail| redact(&detail).to_string())
            .unwrap_or_default(),
        created_at_ms: now_ms(),
    };
    if let Err(error) = state.store.append_log(entry).await {
        tracing::debug!(%error, "writing an inspection log line failed");
    }
}

/// Log details never show anything key- or token-like.
fn redact(value: &Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, value)| {
                    let lower = key.to_ascii_lowercase();
                    let secret = (lower.contains("token")
                        || lower.contains("secret")
                        || lower.contains("authorization")
                        || lower.contains("key"))
                        && key != "triggerKey";
                    (
                        key.clone(),
                        if secret {
                            Value::String("[redacted]".into())
                        } else {
                            redact(value)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// One account to probe.
#[derive(Debug, Clone)]
struct Account {
    entry: AuthFileEntry,
    display: String,
    plan_type: String,
    codex_account_id: String,
    owned: bool,
}

impl Account {
    fn of(file: &ListedFile) -> Account {
        let raw = &file.raw;
        let claims = raw.get("id_token").and_then(Value::as_object);
        let from_claims = |key: &str| {
            claims
                .and_then(|claims| claims.get(key))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let codex_account_id = ["chatgpt_account_id", "account_id"]
            .iter()
            .find_map(|key| raw.get(*key).and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| from_claims("chatgpt_account_id"));
        let plan_type = raw
            .get("plan_type")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| from_claims("plan_type"));
        Account {
            display: file.entry.display().to_string(),
            entry: file.entry.clone(),
            plan_type,
            codex_account_id,
            owned: false,
        }
    }

    fn key(&self) -> String {
        if self.entry.auth_index.is_empty() {
            format!("{}::-", self.entry.name)
        } else {
            format!("{}::{}", self.entry.name, self.entry.auth_index)
        }
    }

    fn base_result(&self, run_id: i64) -> RunResult {
        RunResult {
            run_id,
            account_key: self.key(),
            file_name: self.entry.name.clone(),
            display_account: self.display.clone(),
            account_snapshot: self.entry.account_snapshot.clone(),
            auth_index: self.entry.auth_index.clone(),
            account_id: if self.codex_account_id.is_empty() {
                self.entry.account_id.clone()
            } else {
                self.codex_account_id.clone()
            },
            provider: self.entry.provider.clone(),
            disabled: self.entry.disabled,
            status: self.entry.status.clone(),
            action: Action::Keep.as_str().to_string(),
            action_status: "none".into(),
            plan_type: self.plan_type.clone(),
            created_at_ms: now_ms(),
            ..RunResult::default()
        }
    }

    fn ownership_matches(&self, ownership: &Ownership) -> bool {
        ownership.auth_file_name == self.entry.name
            && (ownership.auth_index.is_empty() || ownership.auth_index == self.entry.auth_index)
            && (ownership.provider.is_empty() || ownership.provider == self.entry.provider)
    }
}

fn shorten(text: &str) -> String {
    if text.len() <= BODY_LIMIT {
        return text.to_string();
    }
    let mut cut = BODY_LIMIT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...(truncated)", &text[..cut])
}

async fn probe(
    client: &CpaClient,
    settings: &InspectionConfig,
    account: &Account,
    run_id: i64,
) -> RunResult {
    let mut result = account.base_result(run_id);
    if account.entry.auth_index.is_empty() {
        result.action_reason = "the credential has no auth index; keeping it".into();
        result.error = "missing auth_index".into();
        result.error_kind = "missing_auth_index".into();
        return result;
    }
    let xai = account.entry.provider == "xai";
    let mut header = vec![
        ("Authorization".to_string(), "Bearer $TOKEN$".to_string()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let url = if xai {
        header.push(("x-xai-token-auth".into(), "xai-grok-cli".into()));
        header.push(("x-grok-client-version".into(), "0.2.101".into()));
        header.push((
            "User-Agent".into(),
            settings.xai_inference_user_agent.clone(),
        ));
        XAI_BILLING_URL
    } else {
        header.push(("User-Agent".into(), settings.user_agent.clone()));
        if !account.codex_account_id.is_empty() {
            header.push((
                "Chatgpt-Account-Id".into(),
                account.codex_account_id.clone(),
            ));
        }
        CODEX_USAGE_URL
    };
    let call = ApiCall {
        auth_index: account.entry.auth_index.clone(),
        method: "GET".into(),
        url: url.into(),
        header,
        data: None,
    };
    let timeout =
        Duration::from_millis(u64::try_from(settings.timeout_ms.max(1)).unwrap_or(15_000));
    let mut reply = Err(String::new());
    for _ in 0..=settings.retries.max(0) {
        reply = client
            .api_call(&call, timeout)
            .await
            .map_err(|error| error.to_string());
        if reply.is_ok() {
            break;
        }
    }
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => {
            result.action_reason = "the probe failed; keeping the account".into();
            result.error = shorten(&error);
            result.error_kind = "request_error".into();
            result.error_detail = shorten(&error);
            return result;
        }
    };
    let Some(status) = reply.status_code else {
        result.action_reason = "the probe answer had no status code; keeping the account".into();
        result.error = "no status_code in the answer".into();
        result.error_kind = "missing_status".into();
        result.error_detail = shorten(&reply.body);
        return result;
    };
    result.status_code = Some(i64::from(status));
    if !(200..300).contains(&status) {
        result.error_kind = "http_status".into();
        result.error_detail = if reply.body.is_empty() {
            format!("HTTP {status}")
        } else {
            shorten(&reply.body)
        };
    }
    let payload: Option<Value> = serde_json::from_str(&reply.body).ok();
    if xai {
        let (action, reason, kind) = decide_xai(account.entry.disabled, status, &reply.body);
        result.action = action.as_str().to_string();
        result.action_reason = reason.to_string();
        result.is_quota = matches!(kind, "free_quota_exhausted" | "spending_limit");
        return result;
    }
    let plan_type = payload
        .as_ref()
        .and_then(|payload| payload.get("plan_type"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| account.plan_type.clone());
    let decision = decide_codex(
        account.entry.disabled,
        status,
        &reply.body,
        payload.as_ref(),
        settings.used_percent_threshold,
        &plan_type,
    );
    result.action = decision.action.as_str().to_string();
    result.action_reason = decision.reason;
    result.used_percent = decision.used_percent;
    result.is_quota = decision.is_quota;
    result.auto_recover_eligible = decision.action == Action::Enable && account.owned;
    if decision.action == Action::Enable && !account.owned {
        result
            .action_reason
            .push_str("; inspection did not disable it, so only a person may enable it");
    }
    result.plan_type = plan_type.clone();
    let windows = codex_quota_windows(payload.as_ref(), &plan_type, now_ms());
    result.quota_inventory_observed = codex_inventory_observed(payload.as_ref());
    if !windows.is_empty() || result.quota_inventory_observed {
        result.quota_windows_json = Value::Array(windows).to_string();
    }
    result
}

fn pick_sample(mut accounts: Vec<Account>, size: i64) -> Vec<Account> {
    if size <= 0 {
        return accounts;
    }
    let mut sampled = Vec::new();
    let mut providers: Vec<String> = accounts
        .iter()
        .map(|account| account.entry.provider.clone())
        .collect();
    providers.sort();
    providers.dedup();
    for provider in providers {
        let mut group: Vec<Account> = Vec::new();
        accounts.retain(|account| {
            if account.entry.provider == provider {
                group.push(account.clone());
                false
            } else {
                true
            }
        });
        // Fisher–Yates, then the first `size`.
        for index in (1..group.len()).rev() {
            let other = (rand::random::<u64>() % (index as u64 + 1)) as usize;
            group.swap(index, other);
        }
        group.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        sampled.extend(group);
    }
    sampled
}

async fn execute<S: Store>(
    state: &web::Data<AppState<S>>,
    mut run: Run,
    client: CpaClient,
    settings: InspectionConfig,
    mut cancelled: watch::Receiver<bool>,
) {
    let run_id = run.id;
    log(
        state,
        run_id,
        "info",
        "inspection started",
        Some(json!({"triggerType": run.trigger_type, "triggerKey": run.trigger_key})),
    )
    .await;
    // The lease is renewed while the run lasts; losing it stops the run.
    let (lease_lost, mut lost) = watch::channel(false);
    let renewal = {
        let state = state.clone();
        let owner = state.automation.inspector.owner_id.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match state
                    .store
                    .renew_lease(run_id, &owner, now_ms(), LEASE_MS)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) | Err(_) => {
                        let _ = lease_lost.send(true);
                        return;
                    }
                }
            }
        })
    };
    let outcome = inspect(
        state,
        &mut run,
        &client,
        &settings,
        &mut cancelled,
        &mut lost,
    )
    .await;
    renewal.abort();
    let (status, message, level) = match &outcome {
        Ok(()) if *cancelled.borrow() => {
            ("cancelled", "inspection cancelled on request", "warning")
        }
        Ok(()) if *lost.borrow() => (
            "interrupted",
            "the run's lease was lost; inspection interrupted",
            "error",
        ),
        Ok(()) => ("completed", "inspection completed", "success"),
        Err(_) => ("failed", "inspection failed", "error"),
    };
    if let Err(error) = &outcome {
        run.error = error.clone();
    }
    run.status = status.to_string();
    run.finished_at_ms = Some(now_ms());
    run.updated_at_ms = now_ms();
    log(
        state,
        run_id,
        level,
        message,
        Some(json!({"status": status, "error": run.error})),
    )
    .await;
    if let Err(error) = state.store.finish_run(run).await {
        tracing::error!(%error, run_id, "finishing an inspection run failed; it will show as interrupted");
    }
}

/// The body of a run; `Err` fails it.
async fn inspect<S: Store>(
    state: &web::Data<AppState<S>>,
    run: &mut Run,
    client: &CpaClient,
    settings: &InspectionConfig,
    cancelled: &mut watch::Receiver<bool>,
    lost: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let files = client
        .list(None, None, CALL_TIMEOUT)
        .await
        .map_err(|error| format!("listing CPA auth files failed: {error}"))?;
    let mut accounts: Vec<Account> = files.iter().map(Account::of).collect();
    // Ownership: a row matching exactly one disabled account marks it as disabled by
    // inspection; rows matching nothing any more are dropped.
    let ownerships = state
        .store
        .ownerships()
        .await
        .map_err(|error| error.to_string())?;
    for ownership in &ownerships {
        let matching: Vec<usize> = accounts
            .iter()
            .enumerate()
            .filter(|(_, account)| account.entry.disabled && account.ownership_matches(ownership))
            .map(|(index, _)| index)
            .collect();
        if let [only] = matching.as_slice() {
            accounts[*only].owned = true;
        } else {
            let _ = state
                .store
                .remove_ownership(&ownership.auth_file_name, Some(&ownership.auth_index))
                .await;
        }
    }
    run.counts.total_files = files.len() as i64;
    let targeted: Vec<Account> = accounts
        .into_iter()
        .filter(|account| settings.target_types.contains(&account.entry.provider))
        .collect();
    run.counts.probe_set_count = targeted.len() as i64;
    let sampled = pick_sample(targeted, settings.sample_size);
    run.counts.sampled_count = sampled.len() as i64;
    run.counts.disabled_count = sampled
        .iter()
        .filter(|account| account.entry.disabled)
        .count() as i64;
    run.counts.enabled_count = run.counts.sampled_count - run.counts.disabled_count;
    log(state, run.id, "info", "accounts selected", Some(json!({"totalFiles": run.counts.total_files, "probeSetCount": run.counts.probe_set_count, "sampledCount": run.counts.sampled_count}))).await;

    let workers = usize::try_from(settings.workers.max(1)).unwrap_or(4);
    let run_id = run.id;
    let stopped = |cancelled: &watch::Receiver<bool>, lost: &watch::Receiver<bool>| {
        *cancelled.borrow() || *lost.borrow()
    };
    let (probe_cancelled, probe_lost) = (cancelled.clone(), lost.clone());
    let mut probes = futures_util::stream::iter(sampled.iter().cloned())
        .map(move |account| {
            let stop = stopped(&probe_cancelled, &probe_lost);
            async move {
                if stop {
                    return None;
                }
                Some((probe(client, settings, &account, run_id).await, account))
            }
        })
        .buffer_unordered(workers);
    let mut results: Vec<(RunResult, Account)> = Vec::new();
    loop {
        // A cancel (or a lost lease) stops waiting at once; probes in flight are dropped.
        let next = tokio::select! {
            next = probes.next() => next,
            _ = cancelled.wait_for(|stop| *stop) => break,
            _ = lost.wait_for(|stop| *stop) => break,
        };
        let Some(item) = next else { break };
        let Some((mut result, account)) = item else {
            continue;
        };
        result.id = state
            .store
            .save_result(result.clone())
            .await
            .unwrap_or_default();
        // A stored Codex result is quota evidence too (source `inspection`).
        if result.id > 0
            && let Some(observation) = inspection_observation(&result, now_ms())
            && let Err(error) = state
                .store
                .write_observations(vec![observation], now_ms())
                .await
        {
            tracing::warn!(%error, file = %result.file_name, "storing quota snapshots from an inspection result failed");
        }
        let level = match result.action.as_str() {
            "delete" | "reauth" => "error",
            "disable" => "warning",
            "enable" => "success",
            _ => "info",
        };
        log(
            state,
            run_id,
            level,
            "account probed",
            Some(json!({"fileName": result.file_name, "displayAccount": result.display_account, "action": result.action, "statusCode": result.status_code, "usedPercent": result.used_percent, "isQuota": result.is_quota})),
        )
        .await;
        results.push((result, account));
    }
    drop(probes);
    if stopped(cancelled, lost) {
        summarize(run, &results);
        return Ok(());
    }
    if settings.auto_action_mode != "none" || settings.auto_recover_enabled {
        auto_actions(state, run_id, client, settings, &mut results).await;
    }
    summarize(run, &results);
    Ok(())
}

fn summarize(run: &mut Run, results: &[(RunResult, Account)]) {
    let count = |action: &str| {
        results
            .iter()
            .filter(|(result, _)| result.action == action)
            .count() as i64
    };
    run.counts.delete_count = count("delete");
    run.counts.disable_count = count("disable");
    run.counts.enable_count = count("enable");
    run.counts.reauth_count = count("reauth");
    run.counts.keep_count = count("keep");
}

/// What `autoActionMode` lets a run execute for a result.
fn auto_action(settings: &InspectionConfig, result: &RunResult) -> Option<Action> {
    match (
        Action::parse(&result.action)?,
        settings.auto_action_mode.as_str(),
    ) {
        (Action::Enable, _) if settings.auto_recover_enabled && result.auto_recover_eligible => {
            Some(Action::Enable)
        }
        (Action::Disable, "disable" | "delete") => Some(Action::Disable),
        (Action::Delete, "disable") => Some(Action::Disable),
        (Action::Delete, "delete") => Some(Action::Delete),
        _ => None,
    }
}

async fn auto_actions<S: Store>(
    state: &web::Data<AppState<S>>,
    run_id: i64,
    client: &CpaClient,
    settings: &InspectionConfig,
    results: &mut [(RunResult, Account)],
) {
    for (result, account) in results.iter_mut() {
        let Some(action) = auto_action(settings, result) else {
            continue;
        };
        let outcome = act(
            state,
            client,
            account,
            action,
            Actor::Inspection,
            Some(run_id),
        )
        .await;
        apply_outcome(result, action, &outcome);
        let _ = state.store.save_result(result.clone()).await;
    }
}

fn apply_outcome(result: &mut RunResult, action: Action, outcome: &Result<bool, String>) {
    match outcome {
        Ok(true) => {
            result.action_status = "success".into();
            result.executed_action = action.as_str().to_string();
            result.action_error.clear();
            match action {
                Action::Disable => result.disabled = true,
                Action::Enable => result.disabled = false,
                _ => {}
            }
        }
        Ok(false) => result.action_status = "skipped".into(),
        Err(error) => {
            result.action_status = "failed".into();
            result.action_error = error.clone();
        }
    }
}

/// Executes one action on the account's credential. `Ok(false)`: nothing to do (already
/// in that state). An automatic disable (`run_id` given, actor inspection) records
/// ownership; any enable, delete or manual disable removes it.
async fn act<S: Store>(
    state: &AppState<S>,
    client: &CpaClient,
    account: &Account,
    action: Action,
    actor: Actor,
    run_id: Option<i64>,
) -> Result<bool, String> {
    let automation = &state.automation;
    let entry = &account.entry;
    let note = Note::new(
        &automation.audit,
        &state.store,
        actor,
        Subject {
            auth_file_name: entry.name.clone(),
            auth_index: entry.auth_index.clone(),
            provider: entry.provider.clone(),
            account: entry.account_snapshot.clone(),
        },
        "inspection suggestion".to_string(),
    );
    let verb = action.as_str();
    let expected = Expected {
        file: if entry.runtime_id.is_empty() {
            entry.name.clone()
        } else {
            entry.runtime_id.clone()
        },
        auth_index: entry.auth_index.clone(),
        provider: entry.provider.clone(),
        account_snapshot: String::new(),
        account_id: String::new(),
    };
    let _guard = automation
        .coordinator
        .lock_files([entry.name.as_str()])
        .await;
    let resolved = match gate::resolve(client, &expected).await {
        Ok(resolved) => resolved,
        Err(error) => {
            note.say(verb, Outcome::Failed, &error.to_string()).await;
            return Err(format!("identity changed: {error}"));
        }
    };
    let result = match action {
        Action::Disable if resolved.entry.disabled => {
            note.say(verb, Outcome::Skipped, "already disabled").await;
            return Ok(false);
        }
        Action::Enable if !resolved.entry.disabled => {
            note.say(verb, Outcome::Skipped, "already enabled").await;
            return Ok(false);
        }
        Action::Disable => gate::set_disabled(client, &resolved, true).await,
        Action::Enable => gate::set_disabled(client, &resolved, false).await,
        Action::Delete => {
            let members = client
                .list(Some(&resolved.entry.name), None, CALL_TIMEOUT)
                .await
                .map_err(|error| error.to_string())?;
            if members.len() > 1 {
                note.say(
                    verb,
                    Outcome::Skipped,
                    "the file holds several credentials; delete it in CPA",
                )
                .await;
                return Err("needs review: the file holds several credentials".into());
            }
            client.delete(&resolved.entry.name).await
        }
        _ => return Ok(false),
    };
    match result {
        Ok(()) => {
            note.say(verb, Outcome::Ok, "CPA confirmed").await;
            if action == Action::Disable && actor == Actor::Inspection {
                let ownership = Ownership {
                    auth_file_name: entry.name.clone(),
                    provider: entry.provider.clone(),
                    auth_index: entry.auth_index.clone(),
                    account_id: entry.account_id.clone(),
                    account_snapshot: entry.account_snapshot.clone(),
                    run_id: run_id.unwrap_or_default(),
                    created_at_ms: now_ms(),
                };
                if let Err(error) = state.store.add_ownership(ownership).await {
                    tracing::warn!(%error, "recording inspection ownership failed");
                }
            } else {
                let _ = state
                    .store
                    .remove_ownership(&entry.name, Some(&entry.auth_index))
                    .await;
            }
            Ok(true)
        }
        Err(error) => {
            note.say(verb, Outcome::Failed, &error.to_string()).await;
            Err(error.to_string())
        }
    }
}

/// Manual actions on a completed run's results (`POST …/runs/{id}/actions`).
pub async fn manual_actions<S: Store>(
    state: &web::Data<AppState<S>>,
    run_id: i64,
    result_ids: &[i64],
    delete_overrides: &[i64],
) -> Result<Vec<Value>, ApiError> {
    if result_ids.is_empty() || result_ids.iter().any(|id| *id <= 0) {
        return Err(ApiError::bad_request(
            ErrorCode::RequestFailed,
            "codex inspection action result ids are required",
        ));
    }
    let run = state.store.run(run_id).await?.ok_or_else(not_found)?;
    if run.status != "completed" {
        return Err(conflict("codex inspection run is not completed"));
    }
    let client = client(state).await.ok_or_else(ApiError::not_configured)?;
    let inspector = &state.automation.inspector;
    if !inspector.reserve() {
        return Err(conflict("codex inspection is already running"));
    }
    let results = state.store.results(run_id).await;
    let outcome = async {
        let results = results?;
        let current: Vec<ListedFile> =
            client
                .list(None, None, CALL_TIMEOUT)
                .await
                .map_err(|error| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        ErrorCode::RequestFailed,
                        error.to_string(),
                    )
                })?;
        let mut outcomes = Vec::new();
        for mut result in results
            .into_iter()
            .filter(|result| result_ids.contains(&result.id))
        {
            let mut action = Action::parse(&result.action).unwrap_or(Action::Keep);
            if action == Action::Reauth && delete_overrides.contains(&result.id) {
                action = Action::Delete;
            }
            let executable = matches!(action, Action::Disable | Action::Enable | Action::Delete);
            let (status, error) =
                if !executable || matches!(result.action_status.as_str(), "success" | "skipped") {
                    ("skipped", String::new())
                } else {
                    match current.iter().find(|file| {
                        file.entry.name == result.file_name
                            && file.entry.auth_index == result.auth_index
                    }) {
                        None => (
                            "failed",
                            "identity changed: the credential is gone from CPA".to_string(),
                        ),
                        Some(file) => {
                            let account = Account::of(file);
                            let outcome =
                                act(state, &client, &account, action, Actor::Operator, None).await;
                            apply_outcome(&mut result, action, &outcome);
                            let _ = state.store.save_result(result.clone()).await;
                            match outcome {
                                Ok(true) => ("success", String::new()),
                                Ok(false) => ("skipped", String::new()),
                                Err(error) if error.starts_with("needs review") => {
                                    ("needs_review", error)
                                }
                                Err(error) => ("failed", error),
                            }
                        }
                    }
                };
            let mut item = json!({
                "resultId": result.id,
                "accountKey": result.account_key,
                "fileName": result.file_name,
                "displayAccount": result.display_account,
                "action": action.as_str(),
                "status": status,
                "success": status == "success",
            });
            if !error.is_empty()
                && let Some(object) = item.as_object_mut()
            {
                object.insert("error".into(), Value::String(error));
            }
            outcomes.push(item);
        }
        if outcomes.is_empty() {
            return Err(ApiError::bad_request(
                ErrorCode::RequestFailed,
                "codex inspection run has no actionable results",
            ));
        }
        Ok(outcomes)
    }
    .await;
    inspector.release();
    outcome
}

/// Runs the schedule until the process ends: interrupted-run recovery, scheduled runs,
/// history pruning.
pub(crate) async fn schedule<S: Store>(state: web::Data<AppState<S>>) {
    // This process holds the database lock: runs left active belong to a dead process.
    match state.store.interrupt_stale_runs(i64::MAX).await {
        Ok(ids) if !ids.is_empty() => {
            tracing::warn!(runs = ?ids, "inspection runs left by the previous process marked interrupted")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "recovering inspection runs failed"),
    }
    let mut last_prune = 0;
    loop {
        let now = now_ms();
        if now - last_prune > 60 * 60 * 1000 {
            last_prune = now;
            if let Err(error) = state.store.prune_runs(KEEP_RUNS, now - RETENTION_MS).await {
                tracing::warn!(%error, "pruning inspection runs failed");
            }
        }
        if state.automation.inspector.running().is_none()
            && let Err(error) = state.store.interrupt_stale_runs(now).await
        {
            tracing::warn!(%error, "recovering inspection runs failed");
        }
        if let Ok(settings) = config(&state).await
            && settings.enabled
        {
            let last = state
                .store
                .last_scheduled_run()
                .await
                .ok()
                .flatten()
                .map(|run| run.finished_at_ms.unwrap_or(run.started_at_ms));
            if let Some(key) =
                scheduled_trigger(&settings, now, last, &jiff::tz::TimeZone::system())
            {
                match start(&state, "scheduled", &key).await {
                    Ok(run) => {
                        tracing::info!(run = run.id, trigger = %key, "scheduled inspection started")
                    }
                    Err(error) => {
                        tracing::debug!(%error, trigger = %key, "scheduled inspection not started")
                    }
                }
            }
        }
        tokio::time::sleep(SCHEDULER_TICK).await;
    }
}
