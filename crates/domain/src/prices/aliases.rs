//! API key aliases: a readable name for a client API key, keyed by the key's hash.
//!
//! A client key is identified by `api_key_hash`, the lowercase hex SHA-256 of the
//! trimmed raw key, computed at ingest; the raw key is never stored, so an alias is
//! stored and returned only under the hash. Aliases are unique case-insensitively.
//!
//! [`plan`] decides what one PUT writes, from the rows stored when it started; the
//! store runs it inside the writing transaction, so the check and the write see the
//! same rows.

use std::collections::{HashMap, HashSet};

use sha2::Digest;

/// The longest alias, in Unicode code points.
pub const MAX_ALIAS_CHARS: usize = 120;

/// One stored alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyAlias {
    /// 64 lowercase hex characters.
    pub api_key_hash: String,
    /// The readable name.
    pub alias: String,
    /// Unix ms of the last change.
    pub updated_at_ms: i64,
}

/// One item of a PUT, as the client sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasItem {
    /// The key's hash: 64 hex characters (any case, trimmed).
    pub api_key_hash: String,
    /// The readable name (required, at most `MAX_ALIAS_CHARS` characters).
    pub alias: String,
    /// Kept when above 0; otherwise the server's clock is used.
    pub updated_at_ms: Option<i64>,
}

/// A PUT of aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasPut {
    /// The aliases to set.
    pub items: Vec<AliasItem>,
    /// Hashes of the keys CPA still knows; with `allow_orphan_alias_cleanup`, an
    /// alias held by a hash outside this set (and outside `items`) may be taken over.
    pub active_api_key_hashes: Vec<String>,
    /// Whether an alias held by a key CPA no longer knows may be taken over.
    pub allow_orphan_alias_cleanup: bool,
}

/// Why a PUT was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// The hash is not 64 hex characters.
    #[error("valid apiKeyHash is required: {0:?} is not 64 hexadecimal characters")]
    InvalidHash(String),
    /// The alias is empty.
    #[error("alias is required (apiKeyHash {0})")]
    AliasRequired(String),
    /// The alias is longer than `MAX_ALIAS_CHARS`.
    #[error("alias must be 120 characters or less (apiKeyHash {0})")]
    AliasTooLong(String),
    /// Another key holds the alias (compared case-insensitively).
    #[error("api key alias already exists: {0:?} is the alias of another API key")]
    Duplicate(String),
}

/// What a PUT writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasPlan {
    /// Hashes whose (orphaned) alias rows are deleted first.
    pub delete: Vec<String>,
    /// Rows to insert or update, in request order (a repeated hash: last wins).
    pub upsert: Vec<ApiKeyAlias>,
}

/// The `api_key_hash` of a raw client API key: lowercase hex SHA-256 of the trimmed key.
pub fn hash_api_key(raw_key: &str) -> String {
    hex::encode(sha2::Sha256::digest(raw_key.trim().as_bytes()))
}

/// A client-given hash, trimmed and lowercased, if it is 64 hex characters.
pub fn normalize_hash(text: &str) -> Option<String> {
    let hash = text.trim().to_ascii_lowercase();
    (hash.len() == 64 && hash.bytes().all(|byte| byte.is_ascii_hexdigit())).then_some(hash)
}

/// The uniqueness key of an alias: trimmed and lowercased.
pub fn alias_key(alias: &str) -> String {
    alias.trim().to_lowercase()
}

/// Decides what a PUT writes against the rows `stored` when it started.
///
/// Every item is validated before anything is planned. Two items with the same alias
/// and different hashes conflict. Against stored rows, items are checked in request
/// order; an alias stays claimed by its old hash for the rest of the request even
/// when an earlier item renamed it, so swapping two aliases in one PUT is refused
/// (write the swap in two requests). A conflicting stored row is taken over only
/// when the client allows orphan cleanup, sent a non-empty active set, and the row's
/// hash is neither active nor in the request.
pub fn plan(
    stored: &[ApiKeyAlias],
    request: &AliasPut,
    now_ms: i64,
) -> Result<AliasPlan, AliasError> {
    let mut items = Vec::with_capacity(request.items.len());
    for item in &request.items {
        let hash = normalize_hash(&item.api_key_hash)
            .ok_or_else(|| AliasError::InvalidHash(item.api_key_hash.clone()))?;
        let alias = item.alias.trim().to_string();
        if alias.is_empty() {
            return Err(AliasError::AliasRequired(hash));
        }
        if alias.chars().count() > MAX_ALIAS_CHARS {
            return Err(AliasError::AliasTooLong(hash));
        }
        let updated_at_ms = item.updated_at_ms.filter(|ms| *ms > 0).unwrap_or(now_ms);
        items.push(ApiKeyAlias {
            api_key_hash: hash,
            alias,
            updated_at_ms,
        });
    }
    let mut in_request: HashMap<String, &str> = HashMap::new();
    for item in &items {
        let key = alias_key(&item.alias);
        if let Some(other) = in_request.insert(key, &item.api_key_hash)
            && other != item.api_key_hash
        {
            return Err(AliasError::Duplicate(item.alias.clone()));
        }
    }
    let active: HashSet<String> = request
        .active_api_key_hashes
        .iter()
        .filter_map(|hash| normalize_hash(hash))
        .chain(items.iter().map(|item| item.api_key_hash.clone()))
        .collect();
    let may_clean = request.allow_orphan_alias_cleanup && !request.active_api_key_hashes.is_empty();
    // (alias key, hash) claims: stored rows plus every item planned so far.
    let mut claims: HashSet<(String, String)> = stored
        .iter()
        .map(|row| (alias_key(&row.alias), row.api_key_hash.clone()))
        .collect();
    let mut plan = AliasPlan::default();
    for item in items {
        let key = alias_key(&item.alias);
        let conflicts: Vec<String> = claims
            .iter()
            .filter(|(claimed, hash)| *claimed == key && *hash != item.api_key_hash)
            .map(|(_, hash)| hash.clone())
            .collect();
        for hash in conflicts {
            let orphan =
                stored.iter().any(|row| row.api_key_hash == hash) && !active.contains(&hash);
            if !(may_clean && orphan) {
                return Err(AliasError::Duplicate(item.alias));
            }
            claims.retain(|(_, claimed_hash)| *claimed_hash != hash);
            plan.delete.push(hash);
        }
        claims.insert((key, item.api_key_hash.clone()));
        plan.upsert
            .retain(|row| row.api_key_hash != item.api_key_hash);
        plan.upsert.push(item);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn row(n: u8, alias: &str) -> ApiKeyAlias {
        ApiKeyAlias {
            api_key_hash: hash(n),
            alias: alias.to_string(),
            updated_at_ms: 1,
        }
    }

    fn item(n: u8, alias: &str) -> AliasItem {
        AliasItem {
            api_key_hash: hash(n),
            alias: alias.to_string(),
            updated_at_ms: None,
        }
    }

    fn put(items: Vec<AliasItem>) -> AliasPut {
        AliasPut {
            items,
            ..AliasPut::default()
        }
    }

    #[test]
    fn hashes_are_sha256_of_the_trimmed_key_and_normalised() {
        assert_eq!(
            hash_api_key("  sk-test  "),
            hash_api_key("sk-test"),
            "trimmed before hashing"
        );
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let upper = format!("  {}  ", hash(0xab).to_uppercase());
        assert_eq!(normalize_hash(&upper), Some(hash(0xab)));
        assert_eq!(normalize_hash("xyz"), None);
        assert_eq!(normalize_hash(&"g".repeat(64)), None);
    }

    #[test]
    fn upsert_keeps_client_time_and_last_item_wins() {
        let mut request = put(vec![item(1, " CI bot "), item(1, "CI runner")]);
        request.items[1].updated_at_ms = Some(42);
        let plan = plan(&[], &request, 1000).expect("plan");
        assert_eq!(plan.upsert.len(), 1);
        assert_eq!(plan.upsert[0].alias, "CI runner");
        assert_eq!(plan.upsert[0].updated_at_ms, 42);
        let plan = super::plan(&[], &put(vec![item(2, "x")]), 1000).expect("plan");
        assert_eq!(plan.upsert[0].updated_at_ms, 1000);
    }

    #[test]
    fn duplicates_are_refused_case_insensitively() {
        assert_eq!(
            plan(&[], &put(vec![item(1, "Bot"), item(2, "bot")]), 1),
            Err(AliasError::Duplicate("bot".into()))
        );
        assert_eq!(
            plan(&[row(1, "Bot")], &put(vec![item(2, " BOT ")]), 1),
            Err(AliasError::Duplicate("BOT".into()))
        );
        // Renaming one's own alias is fine.
        assert!(plan(&[row(1, "Bot")], &put(vec![item(1, "BOT")]), 1).is_ok());
        // A swap in one request is refused: the old alias still counts.
        let swap = put(vec![item(1, "b"), item(2, "a")]);
        assert!(matches!(
            plan(&[row(1, "a"), row(2, "b")], &swap, 1),
            Err(AliasError::Duplicate(_))
        ));
    }

    #[test]
    fn orphan_cleanup_takes_over_an_inactive_alias_only_when_allowed() {
        let stored = [row(9, "deploy")];
        let mut request = put(vec![item(1, "deploy")]);
        assert!(plan(&stored, &request, 1).is_err());
        request.allow_orphan_alias_cleanup = true;
        assert!(plan(&stored, &request, 1).is_err(), "needs an active set");
        request.active_api_key_hashes = vec![hash(1)];
        let plan_ok = plan(&stored, &request, 1).expect("cleanup");
        assert_eq!(plan_ok.delete, vec![hash(9)]);
        request.active_api_key_hashes = vec![hash(1), hash(9).to_uppercase()];
        assert!(
            plan(&stored, &request, 1).is_err(),
            "an active key keeps its alias"
        );
    }

    #[test]
    fn items_are_validated_before_anything_is_planned() {
        let long = "x".repeat(MAX_ALIAS_CHARS + 1);
        assert!(matches!(
            plan(&[], &put(vec![item(1, "ok"), item(2, &long)]), 1),
            Err(AliasError::AliasTooLong(_))
        ));
        let exact = "é".repeat(MAX_ALIAS_CHARS);
        assert!(plan(&[], &put(vec![item(1, &exact)]), 1).is_ok());
        assert!(matches!(
            plan(&[], &put(vec![item(1, "  ")]), 1),
            Err(AliasError::AliasRequired(_))
        ));
        let mut bad = item(1, "x");
        bad.api_key_hash = "nothex".into();
        let error = plan(&[], &put(vec![bad]), 1).expect_err("bad hash");
        assert!(
            error
                .to_string()
                .starts_with("valid apiKeyHash is required")
        );
        assert!(
            AliasError::Duplicate("a".into())
                .to_string()
                .starts_with("api key alias already exists")
        );
    }
}
