//! Auth-file enrichment of usage events (automation spec §1): CPA's usage payloads carry
//! only the credential's `auth_index`; the account, label, file, provider and project come
//! from CPA's auth-file listing, keyed by that index.
//!
//! Rules (as the Go server applied them):
//! - only entries with an auth index are used;
//! - account = `account`, else `email`, skipping values that look like secrets; else the
//!   label, else the file name;
//! - label = `label` → `name` → `email` → account; file = `name`; provider = `provider` →
//!   `type`; project = `project_id` → `projectId` → `gemini_virtual_project` →
//!   `geminiVirtualProject`;
//! - an event qualifies when it has an auth index and lacks the account or the project;
//!   only empty fields are filled, and the snapshot time is set when anything was.
//!
//! Credentials defined in CPA's config.yaml (API keys) have an auth index but no auth
//! file, so their events stay unlabelled.

#![warn(missing_docs)]

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::authfile::text;
use crate::event::UsageEvent;

/// What one credential contributes to the events that used it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSnapshot {
    /// The account (e-mail or name); empty when it only repeats the file name.
    pub account: String,
    /// The label CPA shows.
    pub label: String,
    /// The auth file name.
    pub file: String,
    /// The normalised provider.
    pub provider: String,
    /// The project id (Gemini credentials).
    pub project: String,
    /// When the listing was fetched (Unix ms).
    pub captured_at_ms: i64,
}

/// The snapshots of one listing, by auth index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSnapshots {
    by_index: HashMap<String, AuthSnapshot>,
}

impl AuthSnapshots {
    /// Builds the map from listing entries fetched at `captured_at_ms`.
    pub fn from_entries(entries: &[Map<String, Value>], captured_at_ms: i64) -> AuthSnapshots {
        let mut by_index = HashMap::with_capacity(entries.len());
        for entry in entries {
            let auth_index = text(entry, &["auth_index", "authIndex", "auth-index"]);
            if auth_index.is_empty() {
                continue;
            }
            let mut account = [text(entry, &["account"]), text(entry, &["email"])]
                .into_iter()
                .find(|value| !value.is_empty() && !looks_like_secret(value))
                .unwrap_or_default();
            let file = text(entry, &["name"]);
            let label = [
                text(entry, &["label"]),
                file.clone(),
                text(entry, &["email"]),
                account.clone(),
            ]
            .into_iter()
            .find(|value| !value.is_empty())
            .unwrap_or_default();
            if account.is_empty() {
                account = if label.is_empty() {
                    file.clone()
                } else {
                    label.clone()
                };
            }
            let snapshot = AuthSnapshot {
                account,
                label,
                file,
                provider: text(entry, &["provider", "type"]),
                project: text(
                    entry,
                    &[
                        "project_id",
                        "projectId",
                        "gemini_virtual_project",
                        "geminiVirtualProject",
                    ],
                ),
                captured_at_ms,
            };
            by_index.insert(auth_index, snapshot);
        }
        AuthSnapshots { by_index }
    }

    /// The snapshot of the credential with `auth_index`.
    pub fn get(&self, auth_index: &str) -> Option<&AuthSnapshot> {
        self.by_index.get(auth_index)
    }

    /// Credentials with a snapshot.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// No credential has a snapshot.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// Fills the empty snapshot fields of qualifying events; returns how many changed.
    pub fn apply(&self, events: &mut [UsageEvent]) -> usize {
        let mut changed = 0;
        for event in events.iter_mut().filter(|event| qualifies(event)) {
            let Some(snapshot) = event
                .auth_index
                .as_deref()
                .and_then(|index| self.by_index.get(index))
            else {
                continue;
            };
            let mut filled = false;
            for (field, value) in [
                (&mut event.account_snapshot, &snapshot.account),
                (&mut event.auth_label_snapshot, &snapshot.label),
                (&mut event.auth_file_snapshot, &snapshot.file),
                (&mut event.auth_provider_snapshot, &snapshot.provider),
                (&mut event.auth_project_id_snapshot, &snapshot.project),
            ] {
                if field.as_deref().is_none_or(str::is_empty) && !value.is_empty() {
                    *field = Some(value.clone());
                    filled = true;
                }
            }
            if filled {
                if event.auth_snapshot_at_ms.is_none_or(|at| at == 0) {
                    event.auth_snapshot_at_ms = Some(snapshot.captured_at_ms);
                }
                changed += 1;
            }
        }
        changed
    }
}

/// An event can gain something from the listing: it names a credential and lacks the
/// account or the project.
pub fn qualifies(event: &UsageEvent) -> bool {
    let empty = |field: &Option<String>| field.as_deref().is_none_or(str::is_empty);
    !empty(&event.auth_index)
        && (empty(&event.account_snapshot) || empty(&event.auth_project_id_snapshot))
}

/// A value that looks like an API key rather than an account name: no `@`, no space or
/// slash, and an `sk-`/`AIza` prefix or a length of 32 to 512 bytes.
pub fn looks_like_secret(value: &str) -> bool {
    let value = value.trim();
    if value.is_empty() || value.contains('@') || value.contains([' ', '/', '\\']) {
        return false;
    }
    value.starts_with("sk-") || value.starts_with("AIza") || (32..=512).contains(&value.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn snapshots(json: &str) -> AuthSnapshots {
        let entries = super::super::authfile::parse_listing(json.as_bytes()).unwrap();
        AuthSnapshots::from_entries(&entries, 1_000)
    }

    fn event(auth_index: &str) -> UsageEvent {
        UsageEvent {
            auth_index: Some(auth_index.to_string()),
            ..UsageEvent::default()
        }
    }

    #[test]
    fn snapshots_follow_the_field_order() {
        let map = snapshots(
            r#"{"files":[
                {"name":"codex-a.json","auth_index":"1","type":"codex","email":"a@example.com","label":"Team A"},
                {"name":"gemini.json","auth-index":"2","provider":"gemini","account":"sk-abcdefghijklmnop","project_id":"proj-9"},
                {"name":"vertex.json","authIndex":3,"type":"vertex","gemini_virtual_project":"virt-1"},
                {"name":"no-index.json","type":"claude"}
            ]}"#,
        );
        assert_eq!(map.len(), 3);
        let codex = map.get("1").unwrap();
        assert_eq!(
            (
                codex.account.as_str(),
                codex.label.as_str(),
                codex.file.as_str(),
                codex.provider.as_str()
            ),
            ("a@example.com", "Team A", "codex-a.json", "codex")
        );
        let gemini = map.get("2").unwrap();
        assert_eq!(
            gemini.account, "gemini.json",
            "a secret-looking account falls back to the label"
        );
        assert_eq!(gemini.project, "proj-9");
        let vertex = map.get("3").unwrap();
        assert_eq!(
            (vertex.account.as_str(), vertex.project.as_str()),
            ("vertex.json", "virt-1")
        );
        assert_eq!(vertex.captured_at_ms, 1_000);
    }

    #[test]
    fn only_empty_fields_are_filled() {
        let map = snapshots(
            r#"[{"name":"codex-a.json","auth_index":"1","type":"codex","email":"a@example.com"}]"#,
        );
        let mut events = vec![event("1"), event("9"), UsageEvent::default()];
        events[0].auth_label_snapshot = Some("kept".to_string());
        events[0].auth_snapshot_at_ms = Some(77);
        assert_eq!(map.apply(&mut events), 1);
        assert_eq!(events[0].account_snapshot.as_deref(), Some("a@example.com"));
        assert_eq!(events[0].auth_label_snapshot.as_deref(), Some("kept"));
        assert_eq!(
            events[0].auth_file_snapshot.as_deref(),
            Some("codex-a.json")
        );
        assert_eq!(events[0].auth_snapshot_at_ms, Some(77));
        assert_eq!(events[0].auth_project_id_snapshot, None);
        assert_eq!(events[1], event("9"), "unknown credentials stay unlabelled");

        let mut fresh = vec![event("1")];
        map.apply(&mut fresh);
        assert_eq!(fresh[0].auth_snapshot_at_ms, Some(1_000));
    }

    #[test]
    fn secrets_are_recognised() {
        assert!(looks_like_secret("sk-live-1"));
        assert!(looks_like_secret("AIzaSyA"));
        assert!(looks_like_secret(&"x".repeat(40)));
        assert!(!looks_like_secret("alice@example.com"));
        assert!(!looks_like_secret(
            "projects/abc/very-long-path-segment-0000000000"
        ));
        assert!(!looks_like_secret("Team A"));
    }
}
