//! Quota cooldowns (automation spec §3): a credential that ran out of quota is disabled in
//! CPA and enabled again when its quota resets.
//!
//! - Only newly collected events trigger (the collector's sink hands them over); imports
//!   never do. New triggers need the switch; recovery of existing cooldowns always runs.
//! - Disabling needs CPA's confirmation and is recorded (`quota_cooldowns`) with its
//!   owner. A credential that is already disabled is never taken over, except to extend
//!   a cooldown this owner started itself.
//! - Recovery wakes when the earliest cooldown is due (at most 15 s apart otherwise) and
//!   after a restart at once, so a cooldown that ran out while the server was down is
//!   restored at start. It uses the saved CPA connection directly.
//! - A status change of the credential through the panel (the proxy) during a cooldown
//!   releases it (`release_file`): automation then leaves the credential alone, so a
//!   manual disable is never undone. (The Go server re-enabled it anyway.)

use std::collections::HashMap;
use std::time::Duration;

use actix_web::web;
use cpamp_domain::automation::cooldown::{Owner, Trigger};
use cpamp_domain::automation::store::{CooldownEnd, NewCooldown};
use tokio::sync::mpsc;

use super::audit::{Actor, Note, Outcome, Subject};
use super::cpa::CpaClient;
use super::gate::{self, Expected, ResolveError};
use crate::state::{AppState, Store};

/// Longest sleep of the recovery loop.
pub const RECOVERY_TICK: Duration = Duration::from_secs(15);
/// Cooldowns handled per recovery pass.
const DUE_LIMIT: u32 = 100;
/// A recovery that failed is tried again after this long.
const RETRY_AFTER_MS: i64 = 15_000;
/// Ended cooldowns (and audit entries) are kept this long.
pub const RETENTION_MS: i64 = 90 * 24 * 60 * 60 * 1000;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn subject_of(trigger: &Trigger) -> Subject {
    Subject {
        auth_file_name: trigger.auth_file.clone(),
        auth_index: trigger.auth_index.clone(),
        provider: trigger.provider.clone(),
        account: trigger.account_snapshot.clone(),
    }
}

fn at_text(ms: i64) -> String {
    cpamp_domain::event::format_timestamp_ms(ms)
}

/// The client for the CPA connection in effect, if any.
pub(crate) async fn client<S: Store>(state: &AppState<S>) -> Option<CpaClient> {
    match crate::connection::resolve(state).await {
        Ok(Some(connection)) => Some(CpaClient::new(&connection)),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "reading the CPA connection for account automation failed");
            None
        }
    }
}

/// Runs the cooldown worker until the process ends: triggers from `jobs`, recovery when
/// cooldowns fall due.
pub(crate) async fn run<S: Store>(
    state: web::Data<AppState<S>>,
    mut jobs: mpsc::Receiver<Trigger>,
) {
    let wake = state.automation.cooldown_wake.clone();
    let mut retry_at: HashMap<i64, i64> = HashMap::new();
    let mut last_prune = 0;
    loop {
        let now = now_ms();
        if now - last_prune > 60 * 60 * 1000 {
            last_prune = now;
            match state.store.prune_cooldowns(now - RETENTION_MS).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned ended quota cooldowns"),
                Err(error) => tracing::warn!(%error, "pruning quota cooldowns failed"),
            }
            if let Err(error) = state.store.prune_audit(now - RETENTION_MS).await {
                tracing::warn!(%error, "pruning the automation audit log failed");
            }
        }
        recover_due(&state, &mut retry_at).await;
        let sleep = next_wake(&state, &retry_at).await;
        tokio::select! {
            job = jobs.recv() => match job {
                Some(trigger) => start(&state, trigger).await,
                None => return,
            },
            () = tokio::time::sleep(sleep) => {}
            () = wake.notified() => {}
        }
    }
}

/// How long until the earliest active cooldown falls due (or a failed one may be tried
/// again), at most [`RECOVERY_TICK`].
async fn next_wake<S: Store>(state: &AppState<S>, retry_at: &HashMap<i64, i64>) -> Duration {
    let now = now_ms();
    let Ok(active) = state.store.active_cooldowns().await else {
        return RECOVERY_TICK;
    };
    let earliest = active
        .iter()
        .map(|cooldown| {
            retry_at
                .get(&cooldown.id)
                .map_or(cooldown.recover_at_ms, |at| {
                    (*at).max(cooldown.recover_at_ms)
                })
        })
        .min();
    match earliest {
        Some(at) => {
            Duration::from_millis(u64::try_from((at - now).max(0)).unwrap_or(0)).min(RECOVERY_TICK)
        }
        None => RECOVERY_TICK,
    }
}

/// Disables the credential of a trigger and records the cooldown.
async fn start<S: Store>(state: &AppState<S>, trigger: Trigger) {
    let automation = &state.automation;
    let subject = subject_of(&trigger);
    let reason = format!(
        "{}: quota resets at {}",
        trigger.owner.reason_code(),
        at_text(trigger.recover_at_ms)
    );
    if trigger.recover_at_ms <= now_ms() {
        return;
    }
    let note = Note::new(
        &automation.audit,
        &state.store,
        Actor::QuotaCooldown,
        subject,
        reason,
    );
    let Some(client) = client(state).await else {
        tracing::warn!(auth_file = %trigger.auth_file, "no CPA connection; quota cooldown not started");
        return;
    };
    let expected = Expected {
        file: trigger.auth_file.clone(),
        auth_index: trigger.auth_index.clone(),
        provider: trigger.provider.clone(),
        account_snapshot: trigger.account_snapshot.clone(),
        account_id: String::new(),
    };
    if !expected.is_stable() {
        note.say(
            "disable",
            Outcome::Skipped,
            "the credential has no auth index or provider and account to tell it apart",
        )
        .await;
        return;
    }
    let _guard = automation
        .coordinator
        .lock_files([trigger.auth_file.as_str()])
        .await;
    let resolved = match gate::resolve(&client, &expected).await {
        Ok(resolved) => resolved,
        Err(error) => {
            let outcome = match error {
                ResolveError::Cpa(_) => Outcome::Failed,
                _ => Outcome::Skipped,
            };
            note.say("disable", outcome, &error.to_string()).await;
            return;
        }
    };
    let cooldown = NewCooldown {
        auth_file_name: trigger.auth_file.clone(),
        auth_index: if trigger.auth_index.is_empty() {
            resolved.entry.auth_index.clone()
        } else {
            trigger.auth_index.clone()
        },
        account_snapshot: trigger.account_snapshot.clone(),
        provider: if trigger.provider.is_empty() {
            resolved.entry.provider.clone()
        } else {
            trigger.provider.clone()
        },
        owner: trigger.owner.as_str().to_string(),
        reason_code: trigger.owner.reason_code().to_string(),
        window_kind: trigger.window_kind.clone(),
        evidence_json: trigger
            .evidence
            .as_ref()
            .map(|evidence| evidence.to_string())
            .unwrap_or_default(),
        recover_at_ms: trigger.recover_at_ms,
        event_hash: trigger.event_hash.clone(),
        disabled_at_ms: now_ms(),
    };
    if resolved.entry.disabled {
        // Only this owner's own active cooldown of the same credential may be extended.
        let own = match state.store.active_cooldowns().await {
            Ok(active) => active.into_iter().any(|row| {
                row.auth_file_name == cooldown.auth_file_name
                    && row.owner == cooldown.owner
                    && if row.auth_index.is_empty() {
                        row.provider == cooldown.provider
                            && !row.account_snapshot.is_empty()
                            && row.account_snapshot == cooldown.account_snapshot
                    } else {
                        row.auth_index == cooldown.auth_index
                    }
            }),
            Err(error) => {
                tracing::warn!(%error, "reading quota cooldowns failed");
                false
            }
        };
        if !own {
            note.say(
                "disable",
                Outcome::Skipped,
                "already disabled by someone else; automation does not take it over",
            )
            .await;
            return;
        }
        match state.store.upsert_cooldown(cooldown, now_ms()).await {
            Ok(row) => {
                note.say(
                    "extend",
                    Outcome::Ok,
                    &format!("restores at {}", at_text(row.recover_at_ms)),
                )
                .await;
            }
            Err(error) => tracing::warn!(%error, "extending a quota cooldown failed"),
        }
        automation.cooldown_wake.notify_one();
        return;
    }
    if let Err(error) = gate::set_disabled(&client, &resolved, true).await {
        note.say("disable", Outcome::Failed, &error.to_string())
            .await;
        return;
    }
    match state.store.upsert_cooldown(cooldown, now_ms()).await {
        Ok(row) => {
            note.say(
                "disable",
                Outcome::Ok,
                &format!("CPA confirmed; restores at {}", at_text(row.recover_at_ms)),
            )
            .await;
        }
        Err(error) => {
            // Without the record nobody would restore it: undo the disable.
            let undo = gate::set_disabled(&client, &resolved, false).await;
            note.say(
                "disable",
                Outcome::Failed,
                &format!(
                    "the cooldown could not be saved ({error}); re-enabled: {}",
                    match undo {
                        Ok(()) => "yes".to_string(),
                        Err(undo) => format!("no ({undo})"),
                    }
                ),
            )
            .await;
        }
    }
    automation.cooldown_wake.notify_one();
}

/// Enables the credentials whose cooldown is due.
async fn recover_due<S: Store>(state: &AppState<S>, retry_at: &mut HashMap<i64, i64>) {
    let now = now_ms();
    retry_at.retain(|_, at| *at > now);
    let due = match state.store.due_cooldowns(now, DUE_LIMIT).await {
        Ok(due) => due,
        Err(error) => {
            tracing::warn!(%error, "reading due quota cooldowns failed");
            return;
        }
    };
    let due: Vec<_> = due
        .into_iter()
        .filter(|cooldown| !retry_at.contains_key(&cooldown.id))
        .collect();
    if due.is_empty() {
        return;
    }
    let Some(client) = client(state).await else {
        tracing::warn!(
            due = due.len(),
            "quota cooldowns are due but no CPA connection is configured; they are restored once one is"
        );
        return;
    };
    let automation = &state.automation;
    for cooldown in due {
        let subject = Subject {
            auth_file_name: cooldown.auth_file_name.clone(),
            auth_index: cooldown.auth_index.clone(),
            provider: cooldown.provider.clone(),
            account: cooldown.account_snapshot.clone(),
        };
        let reason = format!(
            "{}: quota reset at {}",
            cooldown.reason_code,
            at_text(cooldown.recover_at_ms)
        );
        let note = Note::new(
            &automation.audit,
            &state.store,
            Actor::QuotaCooldown,
            subject,
            reason,
        );
        let end = |end: CooldownEnd, note: String| {
            let store = state.store.clone();
            let id = cooldown.id;
            async move {
                if let Err(error) = store.end_cooldown(id, end, &note, now_ms()).await {
                    tracing::warn!(%error, "ending a quota cooldown failed");
                }
            }
        };
        if Owner::parse(&cooldown.owner).is_none() {
            end(CooldownEnd::Skipped, "unknown owner".into()).await;
            continue;
        }
        let expected = Expected {
            file: cooldown.auth_file_name.clone(),
            auth_index: cooldown.auth_index.clone(),
            provider: cooldown.provider.clone(),
            account_snapshot: cooldown.account_snapshot.clone(),
            account_id: String::new(),
        };
        if !expected.is_stable() {
            end(
                CooldownEnd::Skipped,
                "no auth index or provider and account to find the credential".into(),
            )
            .await;
            continue;
        }
        let _guard = automation
            .coordinator
            .lock_files([cooldown.auth_file_name.as_str()])
            .await;
        let resolved = match gate::resolve(&client, &expected).await {
            Ok(resolved) => resolved,
            Err(ResolveError::Cpa(error)) => {
                retry_later(state, &note, retry_at, cooldown.id, &error.to_string()).await;
                continue;
            }
            Err(error) => {
                let why = match error {
                    ResolveError::Mismatch(_) => {
                        "auth file identity changed before cooldown recovery"
                    }
                    ResolveError::NotFound => "auth file missing or auth index mismatch",
                    _ => "auth file status change scope is ambiguous",
                };
                end(CooldownEnd::Skipped, format!("{why}: {error}")).await;
                note.say("enable", Outcome::Skipped, &error.to_string())
                    .await;
                continue;
            }
        };
        if !resolved.entry.disabled {
            end(CooldownEnd::Recovered, "already enabled".into()).await;
            note.say("enable", Outcome::Skipped, "already enabled in CPA")
                .await;
            continue;
        }
        match gate::set_disabled(&client, &resolved, false).await {
            Ok(()) => {
                end(CooldownEnd::Recovered, String::new()).await;
                note.say("enable", Outcome::Ok, "CPA confirmed").await;
            }
            Err(error) => {
                retry_later(state, &note, retry_at, cooldown.id, &error.to_string()).await;
            }
        }
    }
}

/// Records a failed recovery; it is tried again after [`RETRY_AFTER_MS`].
async fn retry_later<S: Store>(
    state: &AppState<S>,
    note: &Note<'_, S>,
    retry_at: &mut HashMap<i64, i64>,
    id: i64,
    message: &str,
) {
    retry_at.insert(id, now_ms() + RETRY_AFTER_MS);
    if let Err(error) = state
        .store
        .record_cooldown_error(id, message, now_ms())
        .await
    {
        tracing::warn!(%error, "recording a quota cooldown error failed");
    }
    note.say("enable", Outcome::Failed, message).await;
}

/// A person changed `file`'s status (or deleted it) through the panel: every active
/// cooldown of that file (of the credential with `auth_index`, when given) ends, so
/// automation never undoes the person's choice.
pub(crate) async fn release_file<S: Store>(
    state: &AppState<S>,
    file: &str,
    auth_index: Option<&str>,
    what: &str,
) {
    let active = match state.store.active_cooldowns().await {
        Ok(active) => active,
        Err(error) => {
            tracing::warn!(%error, "reading quota cooldowns failed");
            return;
        }
    };
    let key = super::coordinator::file_key(file);
    for cooldown in active.into_iter().filter(|cooldown| {
        super::coordinator::file_key(&cooldown.auth_file_name) == key
            && auth_index
                .filter(|index| !index.is_empty() && !cooldown.auth_index.is_empty())
                .is_none_or(|index| index == cooldown.auth_index)
    }) {
        let note = format!("released: {what} through the panel during the cooldown");
        match state
            .store
            .end_cooldown(cooldown.id, CooldownEnd::Released, &note, now_ms())
            .await
        {
            Ok(true) => {
                let subject = Subject {
                    auth_file_name: cooldown.auth_file_name.clone(),
                    auth_index: cooldown.auth_index.clone(),
                    provider: cooldown.provider.clone(),
                    account: cooldown.account_snapshot.clone(),
                };
                state
                    .automation
                    .audit
                    .record(
                        &state.store,
                        (Actor::QuotaCooldown, "release"),
                        &subject,
                        &cooldown.reason_code,
                        Outcome::Ok,
                        &note,
                    )
                    .await;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "releasing a quota cooldown failed"),
        }
    }
}
