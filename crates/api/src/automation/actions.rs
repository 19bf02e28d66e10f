//! The account action queue (automation spec §4): authentication failures that need an
//! operator (delete, reauthorise, review) become candidates; with auto-disable on, the
//! credentials of eligible ones are disabled at once (and never enabled automatically).
//!
//! A repeated failure of the same credential for the same reason adds a hit to its
//! pending candidate instead of creating a second one. Manual actions (ignore, resolve,
//! enable, delete the auth file) end a pending candidate.

use actix_web::http::StatusCode;
use actix_web::web;
use cpamp_domain::automation::authfile::normalize_provider;
use cpamp_domain::automation::credential_policy::{Decision, FailureSignal, evaluate};
use cpamp_domain::automation::store::{Candidate, CandidateHit};
use cpamp_domain::event::UsageEvent;
use serde_json::json;
use tokio::sync::mpsc;

use super::audit::{Actor, Note, Outcome, Subject};
use super::cooldowns::{client, release_file};
use super::cpa::CpaError;
use super::gate::{self, Expected, ResolveError};
use crate::error::{ApiError, ErrorCode};
use crate::state::{AppState, Store};

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Ended candidates are kept this long.
pub const RETENTION_MS: i64 = 90 * 24 * 60 * 60 * 1000;

/// A failure the queue tracks: the event and the verdict on it.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub event: UsageEvent,
    pub decision: Decision,
}

/// The verdict on a newly collected failure, if the queue tracks it.
pub(crate) fn job_for(event: &UsageEvent) -> Option<Job> {
    if !event.failed
        || event
            .auth_file_snapshot
            .as_deref()
            .is_none_or(str::is_empty)
    {
        return None;
    }
    evaluate(&FailureSignal::of(event)).map(|decision| Job {
        event: event.clone(),
        decision,
    })
}

fn hit_of(job: &Job) -> CandidateHit {
    let event = &job.event;
    let file = event.auth_file_snapshot.clone().unwrap_or_default();
    let account = event.account_snapshot.clone().unwrap_or_default();
    let account = if account == file {
        String::new()
    } else {
        account
    };
    let provider = normalize_provider(
        event
            .auth_provider_snapshot
            .as_deref()
            .filter(|provider| !provider.is_empty())
            .or(event.provider.as_deref())
            .unwrap_or(""),
    );
    let seen_at_ms = if event.timestamp_ms > 0 {
        event.timestamp_ms
    } else {
        now_ms()
    };
    let decision = &job.decision;
    let evidence = json!({
        "eventHash": event.event_hash,
        "requestId": event.request_id,
        "timestamp": event.timestamp,
        "timestampMs": event.timestamp_ms,
        "statusCode": event.fail_status_code,
        "failSummary": event.fail_summary,
        "headerErrorKind": event.header_error_kind,
        "headerErrorCode": event.header_error_code,
        "headerTraceId": event.header_trace_id,
        "authIndex": event.auth_index,
        "authFileName": file,
        "accountSnapshot": account,
        "accountIdSnapshot": event.auth_project_id_snapshot,
        "authLabel": event.auth_label_snapshot,
        "provider": provider,
        "model": event.model,
        "endpoint": event.endpoint,
        "actionType": decision.action.as_str(),
        "reasonCode": decision.reason_code,
        "reason": decision.reason,
        "confidence": decision.confidence,
        "autoDisableEligible": decision.auto_disable_eligible,
    });
    CandidateHit {
        action_type: decision.action.as_str().to_string(),
        provider,
        auth_file_name: file,
        auth_index: event.auth_index.clone().unwrap_or_default(),
        account_snapshot: account,
        account_id_snapshot: event.auth_project_id_snapshot.clone().unwrap_or_default(),
        auth_label: event.auth_label_snapshot.clone().unwrap_or_default(),
        reason_code: decision.reason_code.to_string(),
        reason: decision.reason.to_string(),
        auto_disable_eligible: decision.auto_disable_eligible,
        evidence_json: evidence.to_string(),
        seen_at_ms,
    }
}

fn expected_of(candidate: &Candidate) -> Expected {
    Expected {
        file: candidate.auth_file_name.clone(),
        auth_index: candidate.auth_index.clone(),
        provider: candidate.provider.clone(),
        account_snapshot: candidate.account_snapshot.clone(),
        account_id: candidate.account_id_snapshot.clone(),
    }
}

fn subject_of(candidate: &Candidate) -> Subject {
    Subject {
        auth_file_name: candidate.auth_file_name.clone(),
        auth_index: candidate.auth_index.clone(),
        provider: candidate.provider.clone(),
        account: candidate.account_snapshot.clone(),
    }
}

/// Runs the queue worker until the process ends.
pub(crate) async fn run<S: Store>(state: web::Data<AppState<S>>, mut jobs: mpsc::Receiver<Job>) {
    let mut last_prune = 0;
    while let Some(job) = jobs.recv().await {
        let now = now_ms();
        if now - last_prune > 60 * 60 * 1000 {
            last_prune = now;
            if let Err(error) = state.store.prune_candidates(now - RETENTION_MS).await {
                tracing::warn!(%error, "pruning account action candidates failed");
            }
        }
        let candidate = match state.store.record_candidate_hit(hit_of(&job), now).await {
            Ok(candidate) => candidate,
            Err(error) => {
                tracing::warn!(%error, "recording an account action candidate failed");
                continue;
            }
        };
        if candidate.auto_disable_eligible
            && candidate.auto_disabled_at_ms.is_none()
            && state.automation.switches.auto_disable()
        {
            auto_disable(&state, &candidate).await;
        }
    }
}

/// Disables an eligible candidate's credential; never restored automatically.
async fn auto_disable<S: Store>(state: &AppState<S>, candidate: &Candidate) {
    let automation = &state.automation;
    let note = Note::new(
        &automation.audit,
        &state.store,
        Actor::AccountActions,
        subject_of(candidate),
        reason_of(candidate),
    );
    let note = &note;
    let fail = |message: String| async move {
        if let Err(error) = state
            .store
            .set_candidate_error(candidate.id, &message, now_ms())
            .await
        {
            tracing::warn!(%error, "recording an account action error failed");
        }
        note.say("disable", Outcome::Failed, &message).await;
    };
    let Some(client) = client(state).await else {
        fail("CPA runtime config is unavailable for auto-disable".into()).await;
        return;
    };
    let expected = expected_of(candidate);
    if !expected.is_stable() {
        fail("the credential has no auth index, account id or account to tell it apart".into())
            .await;
        return;
    }
    let _guard = automation
        .coordinator
        .lock_files([candidate.auth_file_name.as_str()])
        .await;
    let resolved = match gate::resolve(&client, &expected).await {
        Ok(resolved) => resolved,
        Err(error) => {
            fail(format!(
                "current CPA auth file identity verification failed: {error}"
            ))
            .await;
            return;
        }
    };
    if resolved.entry.disabled {
        note.say("disable", Outcome::Skipped, "already disabled")
            .await;
        return;
    }
    if let Err(error) = gate::set_disabled(&client, &resolved, true).await {
        fail(error.to_string()).await;
        return;
    }
    if let Err(error) = state
        .store
        .mark_candidate_auto_disabled(candidate.id, now_ms())
        .await
    {
        let undo = gate::set_disabled(&client, &resolved, false).await;
        fail(format!(
            "disabled, but the candidate could not be updated ({error}); re-enabled: {}",
            if undo.is_ok() { "yes" } else { "no" }
        ))
        .await;
        return;
    }
    note.say(
        "disable",
        Outcome::Ok,
        "CPA confirmed; stays disabled until enabled by hand",
    )
    .await;
}

fn reason_of(candidate: &Candidate) -> String {
    format!("{}: {}", candidate.reason_code, candidate.reason)
}

/// A manual action on a candidate (`POST …/{id}/{action}` or `DELETE …/{id}/auth-file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualAction {
    /// Mark the candidate ignored; nothing changes in CPA.
    Ignore,
    /// Mark the candidate resolved; nothing changes in CPA.
    Resolve,
    /// Enable the credential in CPA and mark the candidate resolved.
    Enable,
    /// Delete the credential's auth file in CPA and mark the candidate deleted.
    DeleteAuthFile,
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "account action candidate not found",
    )
}

fn not_pending() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::RequestFailed,
        "account action candidate is not pending",
    )
}

fn no_longer_matches(error: &ResolveError) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::RequestFailed,
        format!("account action candidate no longer matches current CPA auth file: {error}"),
    )
}

fn cpa_failed(error: &CpaError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::RequestFailed,
        error.to_string(),
    )
}

/// Runs a manual action and returns the candidate as it is afterwards.
pub async fn manual<S: Store>(
    state: &AppState<S>,
    id: i64,
    action: ManualAction,
) -> Result<Candidate, ApiError> {
    let candidate = state.store.candidate(id).await?.ok_or_else(not_found)?;
    if candidate.status != "pending" {
        return Err(not_pending());
    }
    let finish = |status: &'static str| async move {
        state
            .store
            .finish_candidate(id, status, now_ms())
            .await?
            .ok_or_else(not_pending)
    };
    match action {
        ManualAction::Ignore => finish("ignored").await,
        ManualAction::Resolve => finish("resolved").await,
        ManualAction::Enable | ManualAction::DeleteAuthFile => {
            let result = change_in_cpa(state, &candidate, action).await;
            if let Err(error) = &result {
                let _ = state
                    .store
                    .set_candidate_error(id, &error.message, now_ms())
                    .await;
                return Err(result.err().unwrap_or_else(not_pending));
            }
            finish(if action == ManualAction::Enable {
                "resolved"
            } else {
                "deleted"
            })
            .await
        }
    }
}

async fn change_in_cpa<S: Store>(
    state: &AppState<S>,
    candidate: &Candidate,
    action: ManualAction,
) -> Result<(), ApiError> {
    let client = client(state).await.ok_or_else(ApiError::not_configured)?;
    let expected = expected_of(candidate);
    if !expected.is_stable() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RequestFailed,
            "account action candidate has no stable credential identity (auth index, account id or account)",
        ));
    }
    let automation = &state.automation;
    let _guard = automation
        .coordinator
        .lock_files([candidate.auth_file_name.as_str()])
        .await;
    let resolved = match gate::resolve(&client, &expected).await {
        Ok(resolved) => resolved,
        Err(ResolveError::Cpa(error)) => return Err(cpa_failed(&error)),
        Err(error) => return Err(no_longer_matches(&error)),
    };
    let note = Note::new(
        &automation.audit,
        &state.store,
        Actor::Operator,
        subject_of(candidate),
        reason_of(candidate),
    );
    let (verb, result) = match action {
        ManualAction::Enable => (
            "enable",
            gate::set_disabled(&client, &resolved, false).await,
        ),
        _ => {
            // Only a file holding this one credential is deleted.
            let siblings = client
                .list(Some(&resolved.entry.name), None, super::cpa::CALL_TIMEOUT)
                .await
                .map_err(|error| cpa_failed(&error))?;
            if siblings.len() > 1 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::RequestFailed,
                    format!(
                        "account action candidate no longer matches current CPA auth file: {:?} holds {} credentials; delete it in CPA",
                        resolved.entry.name,
                        siblings.len()
                    ),
                ));
            }
            ("delete", client.delete(&resolved.entry.name).await)
        }
    };
    let outcome = if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    let detail = match &result {
        Ok(()) => "CPA confirmed".to_string(),
        Err(error) => error.to_string(),
    };
    note.say(verb, outcome, &detail).await;
    result.map_err(|error| cpa_failed(&error))?;
    // The operator decided about this credential: no cooldown may undo it.
    release_file(
        state,
        &candidate.auth_file_name,
        Some(&candidate.auth_index),
        if verb == "enable" {
            "enabled"
        } else {
            "deleted"
        },
    )
    .await;
    Ok(())
}
