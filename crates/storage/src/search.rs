//! Search without reading every event of the range in full.
//!
//! Most searched columns are dictionary ids, so the query is matched against the
//! dictionary texts first (a few hundred values, whatever the event count); the
//! event condition then becomes integer `IN` lists on the columns whose kind has
//! a matching text, plus `LIKE` on the few free-text columns. SQLite evaluates it
//! while stepping through the range, and only matching events reach Rust.
//!
//! SQLite's `LIKE` folds ASCII case only, while the Rust check lowercases the
//! whole text. For an ASCII needle the two differ only where a free text holds
//! one of the two characters whose lowercase holds an ASCII letter: the Kelvin
//! sign (`k`) and the capital I with a dot above (`i` and a combining dot), so
//! when the needle has that letter, events whose free texts hold that character
//! are also selected and flagged (control characters such as the newlines of
//! failure bodies have no case, so they need no special care). A non-ASCII needle
//! gets no `LIKE`: every event with a non-ASCII character in a free text is
//! selected and flagged. The exact Rust check decides for flagged events, so the
//! answer is the same as a full scan's.

use cpamp_domain::analytics::query::{Scope, search_matches};

use crate::analytics::CacheState;
use crate::dims::DimKind;
use crate::search_index::{ALL_TEXTS, FREE_FAILURE, FREE_REQUEST, FREE_TRACE};

/// Event columns searched as dictionary ids, with the kind of their ids.
pub(crate) const DICTIONARY_COLUMNS: [(&str, DimKind); 24] = [
    ("model_id", DimKind::Model),
    ("requested_model_id", DimKind::Model),
    ("resolved_model_id", DimKind::Model),
    ("endpoint_id", DimKind::Endpoint),
    ("method_id", DimKind::Method),
    ("path_id", DimKind::Path),
    ("client_ip_id", DimKind::ClientIp),
    ("x_forwarded_for_id", DimKind::XForwardedFor),
    ("user_agent_id", DimKind::UserAgent),
    ("source_id", DimKind::Source),
    ("source_hash_id", DimKind::SourceHash),
    ("api_key_hash_id", DimKind::ApiKeyHash),
    ("auth_index_id", DimKind::AuthIndex),
    ("account_snapshot_id", DimKind::Account),
    ("auth_label_snapshot_id", DimKind::AuthLabel),
    ("auth_file_snapshot_id", DimKind::AuthFile),
    ("auth_provider_snapshot_id", DimKind::AuthProvider),
    ("auth_project_id_snapshot_id", DimKind::AuthProject),
    ("reasoning_effort_id", DimKind::ReasoningEffort),
    ("service_tier_id", DimKind::ServiceTier),
    ("executor_type_id", DimKind::ExecutorType),
    ("header_quota_plan_type_id", DimKind::QuotaPlanType),
    ("header_error_kind_id", DimKind::ErrorKind),
    ("header_error_code_id", DimKind::ErrorCode),
];

/// Free-text event columns searched directly: the column a reader sees, the one
/// that stores it (a hex request or trace id as its bytes, see
/// `compact::request_bytes` and `compact::trace_bytes`; the text form is a
/// virtual column computed per row), and its kind in the search index.
const TEXT_COLUMNS: [(&str, &str, u8); 3] = [
    ("request_id", "request_key", FREE_REQUEST),
    ("fail_summary", "fail_summary", FREE_FAILURE),
    ("header_trace_id", "header_trace", FREE_TRACE),
];

/// The SQL form of a scope's search.
#[derive(Debug, Clone)]
pub(crate) struct SearchSql {
    /// True for every event the search matches, and for events flagged by
    /// [`Self::unsure`]; its `?` placeholders (the only `?` in it) take
    /// [`Self::binds`] in order.
    pub condition: String,
    /// True for events whose free texts the condition cannot judge exactly.
    pub unsure: String,
    pub binds: Vec<String>,
    /// What the search index is asked for: every event the search matches holds
    /// one of its ids or a free text with the needle. `None` when a hex id or
    /// the hash can match (a needle of hex digits and dashes), which the index
    /// does not list.
    pub terms: Option<crate::search_index::IndexAsk>,
    /// What the condition is made of, for [`Self::narrowed`].
    parts: Parts,
    /// The matching ids, for telling which rollup entries hold only matches.
    pub matched: std::sync::Arc<Matched>,
}

/// The kinds of the searched identity columns, in `usage_identities` order after
/// the provider (which is not searched).
const SIGNATURE_KINDS: [DimKind; 10] = [
    DimKind::ExecutorType,
    DimKind::AuthIndex,
    DimKind::Source,
    DimKind::SourceHash,
    DimKind::ApiKeyHash,
    DimKind::Account,
    DimKind::AuthLabel,
    DimKind::AuthFile,
    DimKind::AuthProvider,
    DimKind::AuthProject,
];

/// The dictionary ids a search matches, as the condition names them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matched {
    /// The matching texts' ids per dictionary kind, ascending.
    by_kind: std::collections::HashMap<u8, Vec<i64>>,
    /// The client-key hashes the API-key search names, ascending.
    api_keys: Vec<i64>,
    /// The analytics models whose text matches, ascending: the condition selects
    /// every event whose effective model maps to one of them.
    analytics: Vec<i64>,
    /// The effective models (`coalesce(requested_model_id, model_id)`) mapped to
    /// one of [`Self::analytics`], ascending.
    effective: Vec<i64>,
    /// The index terms of kinds other than the credential and client-key columns
    /// and service tiers, ascending: a match that holds none of the others is in
    /// an entry [`Self::identity`] or [`Self::band`] accepts, so a read of the
    /// other matches asks the index for these (and the free texts) only.
    pub uncertain: Vec<i64>,
    /// The index terms of the kinds rollup entries are keyed by (the credential
    /// and client-key columns, models, service tiers), ascending: an event that
    /// holds none of them cannot be in an entry [`Self::identity`] or
    /// [`Self::band`] accepts.
    pub keyed: Vec<i64>,
}

impl Matched {
    fn holds(&self, kind: DimKind, id: i64) -> bool {
        id > 0
            && self
                .by_kind
                .get(&(kind as u8))
                .is_some_and(|ids| ids.binary_search(&id).is_ok())
    }

    /// Whether every event of an identity (the ids of `usage_identities`, in its
    /// column order) matches: one of its searched columns names a matching id.
    pub(crate) fn identity(&self, key: &[i64; 11]) -> bool {
        // The provider (position 0) is not searched.
        SIGNATURE_KINDS
            .iter()
            .zip(&key[1..])
            .any(|(kind, id)| self.holds(*kind, *id))
            || (key[5] > 0 && self.api_keys.binary_search(&key[5]).is_ok())
    }

    /// A condition that holds only for events in an entry [`Self::identity`] or
    /// [`Self::band`] accepts (not for all of them: a matching resolved model is
    /// left out), so a read of the other matches can leave those events out in
    /// SQL; `None` when no term names one.
    pub(crate) fn certain_sql(&self) -> Option<String> {
        let mut terms: Vec<String> = Vec::new();
        for (column, kind) in DICTIONARY_COLUMNS {
            let keyed = SIGNATURE_KINDS.contains(&kind) || kind == DimKind::ServiceTier;
            if let Some(ids) = self.by_kind.get(&(kind as u8)).filter(|_| keyed) {
                terms.push(one_of(column, ids));
            }
        }
        if !self.api_keys.is_empty() {
            terms.push(one_of("api_key_hash_id", &self.api_keys));
        }
        if !self.effective.is_empty() {
            terms.push(one_of(
                "coalesce(requested_model_id, model_id)",
                &self.effective,
            ));
        }
        (!terms.is_empty()).then(|| terms.join(" OR "))
    }

    /// Whether every event of a rollup entry's price band matches: its analytics
    /// model matches (the condition selects each effective model mapped to it),
    /// its billing model is a matching resolved model, or its service tier
    /// matches. A billing model equal to the analytics model is left to the
    /// latter: it may be the analytics model standing in for no resolved model.
    pub(crate) fn band(&self, model: i64, billing: i64, tier: i64) -> bool {
        (model > 0 && self.analytics.binary_search(&model).is_ok())
            || (billing != model && self.holds(DimKind::Model, billing))
            || self.holds(DimKind::ServiceTier, tier)
    }
}

/// The terms of a search condition: those on dictionary ids (no placeholders),
/// those of each free-text column, and the one on the event hash.
#[derive(Debug, Clone)]
struct Parts {
    ids: Vec<String>,
    texts: Vec<TextTerms>,
    /// The hash term and its value.
    hash: Option<(String, String)>,
}

/// The terms of one free-text column: its `LIKE` (one placeholder) and pattern,
/// and the terms flagging its texts for the exact check.
#[derive(Debug, Clone)]
struct TextTerms {
    kind: u8,
    like: Option<(String, String)>,
    unsure: Vec<String>,
}

impl Parts {
    /// The condition, the flagging expression and the binds of the terms of the
    /// free-text kinds in `texts` (and of every other term).
    fn assemble(&self, texts: u8) -> (String, String, Vec<String>) {
        let mut exact = self.ids.clone();
        let mut unsure: Vec<String> = Vec::new();
        let mut binds = Vec::new();
        for column in self.texts.iter().filter(|column| column.kind & texts != 0) {
            if let Some((term, pattern)) = &column.like {
                exact.push(term.clone());
                binds.push(pattern.clone());
            }
            unsure.extend(column.unsure.iter().cloned());
        }
        if let Some((term, value)) = &self.hash {
            exact.push(term.clone());
            binds.push(value.clone());
        }
        let unsure = if unsure.is_empty() {
            "0".to_string()
        } else {
            unsure.join(" OR ")
        };
        let exact = if exact.is_empty() {
            "0".to_string()
        } else {
            exact.join(" OR ")
        };
        (
            format!("(({exact}) OR ({unsure}))"),
            format!("({unsure})"),
            binds,
        )
    }
}

impl SearchSql {
    /// The search of `scope`, or `None` without one.
    pub(crate) fn of(scope: &Scope, state: &CacheState) -> Option<SearchSql> {
        let needle = scope.search_query.as_str();
        if needle.is_empty() {
            return None;
        }
        let mut exact: Vec<String> = Vec::new();
        let mut by_kind: std::collections::HashMap<u8, Vec<i64>> = Default::default();
        for (id, text) in state.texts() {
            if search_matches(text, needle) {
                by_kind.entry(state.kind(*id)).or_default().push(*id);
            }
        }
        for ids in by_kind.values_mut() {
            ids.sort_unstable();
        }
        for (column, kind) in DICTIONARY_COLUMNS {
            if let Some(ids) = by_kind.get(&(kind as u8)) {
                exact.push(one_of(column, ids));
            }
        }
        // The analytics model: the effective model's mapped model. When every such
        // effective model matches as a text itself, the model and requested-model
        // terms already select its events (the effective model is one of them).
        let mut analytics: Vec<i64> = Vec::new();
        let mut effective: Vec<i64> = state
            .analytics_pairs()
            .filter(|(_, mapped)| {
                let matches = search_matches(&state.text(Some(*mapped)), needle);
                if matches {
                    analytics.push(*mapped);
                }
                matches
            })
            .map(|(model, _)| model)
            .collect();
        analytics.sort_unstable();
        analytics.dedup();
        effective.sort_unstable();
        let models = by_kind
            .get(&(DimKind::Model as u8))
            .map_or(&[][..], Vec::as_slice);
        if effective.iter().any(|id| models.binary_search(id).is_err()) {
            exact.push(one_of("coalesce(requested_model_id, model_id)", &effective));
        }
        // The API-key search is OR-ed into the search group.
        let mut exact_api_keys: Vec<i64> = Vec::new();
        let hash = scope.search_api_key_hash.as_str();
        if !hash.is_empty() {
            let mut ids: Vec<i64> = state
                .texts()
                .filter(|(id, text)| {
                    state.kind(**id) == DimKind::ApiKeyHash as u8 && text.eq_ignore_ascii_case(hash)
                })
                .map(|(id, _)| *id)
                .collect();
            if !ids.is_empty() {
                ids.sort_unstable();
                exact.push(one_of("api_key_hash_id", &ids));
                exact_api_keys = ids;
            }
        }
        let mut terms: Vec<i64> = by_kind.values().flatten().copied().collect();
        terms.extend(&effective);
        terms.extend(exact_api_keys.iter().copied());
        terms.sort_unstable();
        terms.dedup();
        // Credential and client-key columns and service tiers put every event
        // holding a matching id into a taken rollup entry; models may.
        let certain = |id: &i64| {
            let kind = state.kind(*id);
            kind == DimKind::ServiceTier as u8
                || SIGNATURE_KINDS
                    .iter()
                    .any(|signature| *signature as u8 == kind)
        };
        let keyed: Vec<i64> = terms
            .iter()
            .copied()
            .filter(|id| certain(id) || state.kind(*id) == DimKind::Model as u8)
            .collect();
        let uncertain: Vec<i64> = terms.iter().copied().filter(|id| !certain(id)).collect();
        let matched = std::sync::Arc::new(Matched {
            by_kind,
            api_keys: exact_api_keys,
            analytics,
            effective: effective.clone(),
            uncertain,
            keyed,
        });
        let mut texts: Vec<TextTerms> = Vec::new();
        // A hex id stored as bytes reads back as hex digits and dashes only: a
        // needle with any other character can only be in a stored text, so the
        // text need not be computed.
        let hex_like = needle
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() || byte == b'-');
        for (column, stored, kind) in TEXT_COLUMNS {
            let mut column_terms = TextTerms {
                kind,
                like: None,
                unsure: Vec::new(),
            };
            if needle.is_ascii() {
                let like = if column == stored || hex_like {
                    format!("{column} LIKE ? ESCAPE '\\'")
                } else {
                    format!("(typeof({stored}) = 'text' AND {stored} LIKE ? ESCAPE '\\')")
                };
                column_terms.like = Some((like, like_pattern(needle)));
                for (letter, character) in ASCII_FROM_LOWERCASE {
                    if needle.contains(letter) {
                        column_terms
                            .unsure
                            .push(format!("instr({stored}, '{character}') > 0"));
                    }
                }
            } else {
                // A text holds a non-ASCII character exactly when its character
                // count differs from its byte count (never so for stored bytes,
                // whose text is ASCII).
                column_terms.unsure.push(format!(
                    "length({stored}) <> length(CAST({stored} AS BLOB))"
                ));
            }
            texts.push(column_terms);
        }
        // The hash is lowercase hex: only a hex needle can be part of it.
        let hash = needle
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit())
            .then(|| {
                (
                    "instr(lower(hex(event_hash)), ?) > 0".to_string(),
                    needle.to_string(),
                )
            });
        let parts = Parts {
            ids: exact,
            texts,
            hash,
        };
        let (condition, unsure, binds) = parts.assemble(ALL_TEXTS);
        Some(SearchSql {
            condition,
            unsure,
            binds,
            parts,
            matched,
            terms: (!hex_like).then(|| crate::search_index::IndexAsk {
                terms,
                needle: needle
                    .is_ascii()
                    .then(|| needle.to_ascii_lowercase().into_bytes()),
            }),
        })
    }
}

impl SearchSql {
    /// The search for a part of the range where only free texts of the kinds in
    /// `texts` can hold the needle (the search index tells, `Piece::Range`): the
    /// terms on the other kinds' columns are left out, which spares every event
    /// read their evaluation. The events the condition selects are unchanged.
    pub(crate) fn narrowed(&self, texts: u8) -> std::borrow::Cow<'_, SearchSql> {
        if texts & ALL_TEXTS == ALL_TEXTS {
            return std::borrow::Cow::Borrowed(self);
        }
        let (condition, unsure, binds) = self.parts.assemble(texts);
        std::borrow::Cow::Owned(SearchSql {
            condition,
            unsure,
            binds,
            terms: self.terms.clone(),
            parts: self.parts.clone(),
            matched: self.matched.clone(),
        })
    }

    /// [`Self::condition`] with its placeholders numbered from `first` (`?4`,
    /// `?5`, …), for statements that number their own placeholders: a plain `?`
    /// after numbered ones would not take the next argument.
    pub(crate) fn numbered_condition(&self, first: usize) -> String {
        let mut out = String::with_capacity(self.condition.len() + 8);
        let mut next = first;
        for ch in self.condition.chars() {
            if ch == '?' {
                out.push_str(&format!("?{next}"));
                next += 1;
            } else {
                out.push(ch);
            }
        }
        out
    }
}

/// The non-ASCII characters whose lowercase holds an ASCII letter, with that
/// letter (the `search_characters` test checks every character).
const ASCII_FROM_LOWERCASE: [(char, char); 2] = [('i', '\u{130}'), ('k', '\u{212A}')];

/// Short id lists are compared one by one, which SQLite evaluates more cheaply per
/// row than a lookup in the table it builds for `IN`.
const EQUALITY_CHAIN: usize = 8;

/// `expression` is one of `ids` (sorted, not empty).
fn one_of(expression: &str, ids: &[i64]) -> String {
    if ids.len() <= EQUALITY_CHAIN {
        let terms: Vec<String> = ids
            .iter()
            .map(|id| format!("{expression} = {id}"))
            .collect();
        format!("({})", terms.join(" OR "))
    } else {
        format!("{expression} IN ({})", list(ids))
    }
}

fn list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// `%needle%` with `\`, `%` and `_` escaped: the needle is matched literally.
fn like_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for ch in needle.chars() {
        if matches!(ch, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::ASCII_FROM_LOWERCASE;

    /// The flagged characters are exactly those whose lowercase holds an ASCII
    /// character, each with the letter it gives.
    #[test]
    fn search_characters() {
        let mut found: Vec<(char, char)> = Vec::new();
        for character in (0x80..=0x10_FFFF).filter_map(char::from_u32) {
            for lower in character.to_lowercase().filter(char::is_ascii) {
                found.push((lower, character));
            }
        }
        assert_eq!(found, ASCII_FROM_LOWERCASE);
    }
}
