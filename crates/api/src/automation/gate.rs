//! Finding the exact credential automation means before changing it (automation spec
//! §0.3–§0.4). CPA can expand one physical auth file into several runtime credentials,
//! so a file name alone is not enough: the credential is looked up by file, narrowed by
//! its auth index, checked against what automation saw in the event (provider, account),
//! and changed by its runtime id.
//!
//! Automation never changes a file whose credentials share one physical source (a
//! plugin-expanded file): that would change all of them at once.

use cpamp_domain::automation::authfile::{AuthFileEntry, normalize_provider};

use super::cpa::{CALL_TIMEOUT, CpaClient, CpaError};

/// The credential a caller believes it acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The auth file name.
    pub file: String,
    /// The credential's `auth_index`.
    pub auth_index: String,
    /// The credential's provider as recorded (`codex`, `xai`, …); compared after
    /// normalisation, and with the account it identifies a credential without an auth
    /// index.
    pub provider: String,
    /// The account recorded with the event.
    pub account_snapshot: String,
    /// The provider's account id (for example Codex's ChatGPT account id).
    pub account_id: String,
}

impl Expected {
    /// A credential can be told apart from its siblings: an auth index, an account id, or
    /// a provider with an account.
    pub fn is_stable(&self) -> bool {
        !self.auth_index.trim().is_empty()
            || !self.account_id.trim().is_empty()
            || (!self.provider.trim().is_empty() && !self.snapshot().is_empty())
    }

    /// The account snapshot, empty when it only repeats the file name.
    fn snapshot(&self) -> &str {
        let snapshot = self.account_snapshot.trim();
        if snapshot == self.file.trim() {
            ""
        } else {
            snapshot
        }
    }
}

/// Why no single credential could be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// CPA lists no such credential.
    #[error("auth file not found in CPA")]
    NotFound,
    /// The listed credential is not the one expected (identity changed).
    #[error("CPA auth file identity mismatch: {0}")]
    Mismatch(String),
    /// Several credentials match; changing one could hit the wrong one.
    #[error("auth file status change scope is ambiguous: {0}")]
    Ambiguous(String),
    /// CPA's listing could not be read.
    #[error(transparent)]
    Cpa(#[from] CpaError),
}

/// The credential to change, as CPA lists it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The credential as listed.
    pub entry: AuthFileEntry,
    /// What CPA's status and delete calls take: the runtime id, else the file name.
    pub selector: String,
}

/// Why the live credential is not the expected one, if it is not.
pub fn mismatch(expected: &Expected, live: &AuthFileEntry) -> Option<String> {
    let index = expected.auth_index.trim();
    if !index.is_empty() && index != live.auth_index {
        return Some(format!(
            "auth index {index:?} expected, CPA lists {:?}",
            live.auth_index
        ));
    }
    let provider = normalize_provider(&expected.provider);
    if !provider.is_empty() && !live.provider.is_empty() && provider != live.provider {
        return Some(format!(
            "provider {provider:?} expected, CPA lists {:?}",
            live.provider
        ));
    }
    let account_id = expected.account_id.trim();
    if index.is_empty() && !account_id.is_empty() && account_id != live.account_id {
        return Some(format!("account id {account_id:?} expected"));
    }
    let snapshot = expected.snapshot();
    if index.is_empty() && account_id.is_empty() && !snapshot.is_empty() {
        let live_snapshot = if live.account_snapshot.is_empty() {
            live.display()
        } else {
            live.account_snapshot.as_str()
        };
        if snapshot != live_snapshot && snapshot != live.label && snapshot != live.email {
            return Some(format!(
                "account {snapshot:?} expected, CPA lists {live_snapshot:?}"
            ));
        }
    }
    None
}

/// Resolves the expected credential against CPA's current listing.
pub async fn resolve(client: &CpaClient, expected: &Expected) -> Result<Resolved, ResolveError> {
    let file = expected.file.trim();
    if file.is_empty() {
        return Err(ResolveError::NotFound);
    }
    let listed = client.list(Some(file), None, CALL_TIMEOUT).await?;
    let entries: Vec<AuthFileEntry> = listed.into_iter().map(|listed| listed.entry).collect();
    pick(&entries, expected)
}

/// The pure part of [`resolve`]: the one entry of `entries` (CPA's listing filtered by
/// the file) the caller means.
pub fn pick(entries: &[AuthFileEntry], expected: &Expected) -> Result<Resolved, ResolveError> {
    let file = expected.file.trim();
    let matched: Vec<&AuthFileEntry> = entries
        .iter()
        .filter(|entry| entry.runtime_id == file || entry.name == file)
        .collect();
    let index = expected.auth_index.trim();
    let narrowed: Vec<&AuthFileEntry> = if index.is_empty() {
        matched
    } else {
        matched
            .into_iter()
            .filter(|entry| entry.auth_index == index)
            .collect()
    };
    let chosen = match narrowed.as_slice() {
        [] => return Err(ResolveError::NotFound),
        [one] => *one,
        several => {
            let verified: Vec<&&AuthFileEntry> = several
                .iter()
                .filter(|entry| mismatch(expected, entry).is_none())
                .collect();
            match verified.as_slice() {
                [one] => **one,
                [] => {
                    return Err(ResolveError::Mismatch(format!(
                        "none of the {} credentials of {file:?} matches",
                        several.len()
                    )));
                }
                _ => {
                    return Err(ResolveError::Ambiguous(format!(
                        "{} credentials of {file:?} match",
                        verified.len()
                    )));
                }
            }
        }
    };
    if let Some(reason) = mismatch(expected, chosen) {
        return Err(ResolveError::Mismatch(reason));
    }
    let siblings = entries
        .iter()
        .filter(|entry| entry.name == chosen.name)
        .count();
    if siblings > 1 && (chosen.runtime_id.is_empty() || chosen.runtime_id == chosen.name) {
        return Err(ResolveError::Ambiguous(format!(
            "{:?} is the source of {siblings} credentials; change them in CPA",
            chosen.name
        )));
    }
    let selector = if chosen.runtime_id.is_empty() {
        chosen.name.clone()
    } else {
        chosen.runtime_id.clone()
    };
    Ok(Resolved {
        entry: chosen.clone(),
        selector,
    })
}

/// Disables or enables the resolved credential; CPA must confirm.
pub async fn set_disabled(
    client: &CpaClient,
    resolved: &Resolved,
    disabled: bool,
) -> Result<(), CpaError> {
    let index = Some(resolved.entry.auth_index.as_str()).filter(|index| !index.is_empty());
    client
        .set_disabled(&resolved.selector, index, disabled)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn entry(id: &str, name: &str, index: &str, provider: &str, account: &str) -> AuthFileEntry {
        AuthFileEntry {
            runtime_id: id.into(),
            name: name.into(),
            auth_index: index.into(),
            provider: provider.into(),
            account_snapshot: account.into(),
            ..AuthFileEntry::default()
        }
    }

    fn expected(file: &str, index: &str, provider: &str, account: &str) -> Expected {
        Expected {
            file: file.into(),
            auth_index: index.into(),
            provider: provider.into(),
            account_snapshot: account.into(),
            account_id: String::new(),
        }
    }

    #[test]
    fn the_credential_is_found_by_file_and_index() {
        let entries = [entry("a.json", "a.json", "11", "codex", "a@example.com")];
        let resolved = pick(
            &entries,
            &expected("a.json", "11", "codex", "a@example.com"),
        )
        .unwrap();
        assert_eq!(resolved.selector, "a.json");
        assert_eq!(
            pick(&entries, &expected("a.json", "22", "codex", "")),
            Err(ResolveError::NotFound)
        );
        assert!(matches!(
            pick(&entries, &expected("a.json", "11", "claude", "")),
            Err(ResolveError::Mismatch(_))
        ));
        assert!(matches!(
            pick(&entries, &expected("a.json", "", "codex", "b@example.com")),
            Err(ResolveError::Mismatch(_))
        ));
    }

    #[test]
    fn expanded_credentials_are_changed_by_runtime_id_never_through_their_source() {
        let entries = [
            entry("team.json", "team.json", "s0", "gemini", ""),
            entry(
                "team.json#p1",
                "team.json",
                "p1",
                "gemini",
                "p1@example.com",
            ),
            entry(
                "team.json#p2",
                "team.json",
                "p2",
                "gemini",
                "p2@example.com",
            ),
        ];
        let child = pick(&entries, &expected("team.json", "p2", "gemini", "")).unwrap();
        assert_eq!(child.selector, "team.json#p2");
        assert!(matches!(
            pick(&entries, &expected("team.json", "s0", "gemini", "")),
            Err(ResolveError::Ambiguous(_))
        ));
        assert!(matches!(
            pick(&entries, &expected("team.json", "", "gemini", "")),
            Err(ResolveError::Ambiguous(_))
        ));
    }
}
