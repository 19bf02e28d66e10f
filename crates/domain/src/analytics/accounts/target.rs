//! The credential a client names an account by, and its opaque account key.

#![warn(missing_docs)]

use std::fmt::Write as _;

use crate::analytics::AnalyticsError;
use crate::analytics::query::Identity;

/// The credential fields a client names an account by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountTarget {
    /// The opaque account key, when the client has one.
    pub account_key: String,
    /// The credential's account (usually an e-mail) as recorded on its events.
    pub account_snapshot: String,
    /// The credential's label in CPA.
    pub auth_label_snapshot: String,
    /// The CPA auth file the credential lives in.
    pub auth_file_snapshot: String,
    /// The credential's provider; normalised for the key (lowercase, `_` → `-`,
    /// `x-ai`/`grok` → `xai`), and required for a file-backed target.
    pub auth_provider_snapshot: String,
    /// The credential's project id (Gemini).
    pub auth_project_id_snapshot: String,
    /// CPA's index of the credential; with the auth file it is the strongest key.
    pub auth_index: String,
    /// The masked source; stands in for the auth file when it differs from the
    /// account and label.
    pub source: String,
}

impl AccountTarget {
    /// The target of a stored identity (snapshot provider, else event provider).
    pub fn of_identity(identity: &Identity) -> AccountTarget {
        AccountTarget {
            account_key: String::new(),
            account_snapshot: identity.account.to_string(),
            auth_label_snapshot: identity.auth_label.to_string(),
            auth_file_snapshot: identity.auth_file.to_string(),
            auth_provider_snapshot: identity.effective_provider().to_string(),
            auth_project_id_snapshot: identity.auth_project.to_string(),
            auth_index: identity.auth_index.to_string(),
            source: identity.source.to_string(),
        }
    }

    /// Some credential field is set.
    pub fn has_identity(&self) -> bool {
        [
            &self.account_snapshot,
            &self.auth_label_snapshot,
            &self.auth_file_snapshot,
            &self.auth_provider_snapshot,
            &self.auth_project_id_snapshot,
            &self.auth_index,
            &self.source,
        ]
        .iter()
        .any(|value| !value.trim().is_empty())
    }

    /// The file that backs the credential: the auth file, else a source that is
    /// neither the account nor the label (a file name CPA reports as source).
    pub fn file(&self) -> &str {
        let file = self.auth_file_snapshot.trim();
        if !file.is_empty() {
            return file;
        }
        let source = self.source.trim();
        if !source.is_empty()
            && source != self.account_snapshot.trim()
            && source != self.auth_label_snapshot.trim()
        {
            source
        } else {
            ""
        }
    }

    /// Checks what the key rules need: some credential field, and a provider
    /// when the credential is file-backed.
    pub fn validate(&self, what: &str) -> Result<(), AnalyticsError> {
        if !self.has_identity() && self.account_key.trim().is_empty() {
            return Err(AnalyticsError::Invalid(format!(
                "{what}: set at least one of account_snapshot, auth_label_snapshot, auth_file_snapshot, auth_provider_snapshot, auth_project_id_snapshot, auth_index or source"
            )));
        }
        if !self.file().is_empty() && self.auth_provider_snapshot.trim().is_empty() {
            return Err(AnalyticsError::Invalid(format!(
                "{what}: auth_provider_snapshot is required for a file-backed credential"
            )));
        }
        Ok(())
    }

    /// The opaque account key (format v2), or the given `account_key` when no
    /// rule applies.
    pub fn key(&self) -> String {
        let file = self.file();
        let provider = normalize_provider(&self.auth_provider_snapshot);
        let project = self.auth_project_id_snapshot.trim();
        let account = self.account_snapshot.trim();
        let label = self.auth_label_snapshot.trim();
        let index = self.auth_index.trim();
        let set = |value: &str| !value.is_empty();
        let p = provider.as_str();
        let (kind, values): (&str, Vec<&str>) = if set(file) && set(index) {
            ("file-index", vec![file, index])
        } else if set(file) && set(p) && set(project) {
            ("file-project", vec![file, p, project])
        } else if set(file) && set(p) && set(account) {
            ("file-account", vec![file, p, account])
        } else if set(file) && set(p) && set(label) {
            ("file-label", vec![file, p, label])
        } else if set(file) && set(p) {
            ("file", vec![file, p])
        } else if set(p) && set(index) {
            ("auth-index", vec![p, index])
        } else if set(p) && set(project) {
            ("project", vec![p, project])
        } else if set(p) && set(account) {
            ("account", vec![p, account])
        } else if set(p) && set(label) {
            ("label", vec![p, label])
        } else {
            return self.account_key.trim().to_string();
        };
        let mut key = format!("usage-account-history:2:{kind}");
        for value in values {
            key.push(':');
            for byte in value.as_bytes() {
                let _ = write!(key, "{byte:02X}");
            }
        }
        key
    }
}

/// Lowercase, `_` → `-`, and the xAI aliases folded into `xai`.
pub fn normalize_provider(provider: &str) -> String {
    let provider = provider.trim().to_lowercase().replace('_', "-");
    match provider.as_str() {
        "x-ai" | "grok" => "xai".to_string(),
        _ => provider,
    }
}
