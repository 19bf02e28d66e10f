//! The audit log of automatic account changes: every disable, enable, delete, release or
//! deliberate skip automation decides, with the reason and CPA's answer, kept in the
//! database (`GET /v0/management/automation/audit`) and counted for `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cpamp_domain::automation::store::{AuditEntry, AuditStore};

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Actor {
    /// Quota cooldowns.
    QuotaCooldown,
    /// The account action queue (auto-disable).
    AccountActions,
    /// Server inspection.
    Inspection,
    /// A person, through the panel or the API.
    Operator,
}

impl Actor {
    /// The actor as the audit log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::QuotaCooldown => "quota_cooldown",
            Actor::AccountActions => "account_actions",
            Actor::Inspection => "inspection",
            Actor::Operator => "operator",
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The action was carried out.
    Ok,
    /// The action was tried and failed.
    Failed,
    /// The action was not needed or not allowed.
    Skipped,
}

impl Outcome {
    /// The outcome as the audit log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What was acted on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The credential's auth file name.
    pub auth_file_name: String,
    /// The credential's `auth_index`.
    pub auth_index: String,
    /// The credential's provider.
    pub provider: String,
    /// The account (e-mail or name), when known.
    pub account: String,
}

/// Counts per (actor, action, outcome) since the process started.
pub type AuditCounts = BTreeMap<(&'static str, String, &'static str), u64>;

/// Writes audit entries. Cheap to clone.
#[derive(Clone, Default)]
pub struct AuditLog {
    counts: Arc<Mutex<AuditCounts>>,
}

impl AuditLog {
    /// Records one decision (`actor` did `action`). A failed write is logged, never fatal: the change in CPA
    /// already happened.
    pub async fn record<S: AuditStore>(
        &self,
        store: &S,
        (actor, action): (Actor, &str),
        subject: &Subject,
        reason: &str,
        outcome: Outcome,
        detail: &str,
    ) {
        {
            let mut counts = self
                .counts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *counts
                .entry((actor.as_str(), action.to_string(), outcome.as_str()))
                .or_insert(0) += 1;
        }
        tracing::info!(
            actor = actor.as_str(),
            action,
            outcome = outcome.as_str(),
            auth_file = %subject.auth_file_name,
            reason,
            detail,
            "account automation"
        );
        let entry = AuditEntry {
            id: 0,
            at_ms: jiff::Timestamp::now().as_millisecond(),
            actor: actor.as_str().to_string(),
            action: action.to_string(),
            auth_file_name: subject.auth_file_name.clone(),
            auth_index: subject.auth_index.clone(),
            provider: subject.provider.clone(),
            account: subject.account.clone(),
            reason: reason.to_string(),
            outcome: outcome.as_str().to_string(),
            detail: detail.to_string(),
        };
        if let Err(error) = store.append_audit(entry).await {
            tracing::warn!(%error, "writing the automation audit log failed");
        }
    }

    /// Entries written since the process started, per (actor, action, outcome).
    pub fn counts(&self) -> AuditCounts {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// One decision about one account, written when its outcome is known.
pub struct Note<'a, S> {
    log: &'a AuditLog,
    store: &'a S,
    actor: Actor,
    subject: Subject,
    reason: String,
}

impl<'a, S: AuditStore> Note<'a, S> {
    /// A note by `actor` about `subject`, for `reason`; written when its outcome is known.
    pub fn new(
        log: &'a AuditLog,
        store: &'a S,
        actor: Actor,
        subject: Subject,
        reason: String,
    ) -> Note<'a, S> {
        Note {
            log,
            store,
            actor,
            subject,
            reason,
        }
    }

    /// Writes the entry: `action` ended with `outcome`; `detail` is CPA's answer or why.
    pub async fn say(&self, action: &str, outcome: Outcome, detail: &str) {
        self.log
            .record(
                self.store,
                (self.actor, action),
                &self.subject,
                &self.reason,
                outcome,
                detail,
            )
            .await;
    }
}
