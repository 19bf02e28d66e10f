//! Which source entry a model id means.
//!
//! Only a **unique strong match** is saved automatically; everything else becomes a
//! list of scored candidates for a person to confirm. Sources are tried in priority
//! order (models.dev, LiteLLM, OpenRouter, others last):
//! - models.dev (with its canonical catalog): the unique *official* entry (the
//!   provider entry that is itself the canonical model for the id or its tail); or,
//!   for an id with a `/`, a unique exact or case-insensitive key. models.dev never
//!   accepts a fuzzy match.
//! - other sources: the first index with hits among exact key or source id,
//!   case-insensitive, models.dev model part exact, the same case-insensitive, tail
//!   tokens, whole-id tokens; the hit must be unique within the source.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::sources::{Canonical, SourceEntry};
use super::{ModelPrice, source};

/// Most candidates shown per source.
pub const MAX_CANDIDATES: usize = 8;
const MIN_SCORE: f64 = 0.55;
const MIN_FAMILY_SCORE: f64 = 0.34;

/// A possible price for a model, for a person to confirm.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The model's id at the source.
    pub source_model_id: String,
    /// Rounded to two decimals.
    pub score: f64,
    /// Why it was proposed (which rule matched).
    pub reason: &'static str,
    /// The price the source offers.
    pub price: ModelPrice,
}

/// What a sync selected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Model id (as requested or as found) → price to save.
    pub prices: BTreeMap<String, ModelPrice>,
    /// Requested ids with candidates but no automatic match, in request order.
    pub candidates: Vec<(String, Vec<Candidate>)>,
    /// Requested ids nothing resembles.
    pub unmatched: Vec<String>,
}

struct Entry {
    key: String,
    price: ModelPrice,
    direct: Vec<String>,
    aliases: Vec<String>,
}

/// Every entry of the sources that answered, indexed for matching.
pub struct Catalog {
    entries: Vec<Entry>,
    canonical: Canonical,
    /// Source names in priority order.
    sources: Vec<String>,
    by_source: HashMap<String, Vec<usize>>,
    exact: HashMap<String, Vec<usize>>,
    folded: HashMap<String, Vec<usize>>,
    alias_exact: HashMap<String, Vec<usize>>,
    alias_folded: HashMap<String, Vec<usize>>,
    tail: HashMap<String, Vec<usize>>,
    whole: HashMap<String, Vec<usize>>,
}

fn priority(source_name: &str) -> usize {
    source::SYNC_ORDER
        .iter()
        .position(|known| *known == source_name)
        .unwrap_or(source::SYNC_ORDER.len())
}

fn push(index: &mut HashMap<String, Vec<usize>>, identity: String, entry: usize) {
    if identity.is_empty() {
        return;
    }
    let hits = index.entry(identity).or_default();
    if hits.last() != Some(&entry) {
        hits.push(entry);
    }
}

/// The models.dev model part of `pid/mid`.
fn models_dev_model(source_model_id: &str) -> Option<&str> {
    source_model_id
        .trim()
        .split_once('/')
        .map(|(_, model)| model.trim())
        .filter(|model| !model.is_empty())
}

impl Catalog {
    /// A catalog of `entries`, with models.dev's canonical ids to match against.
    pub fn new(entries: Vec<SourceEntry>, canonical: Canonical) -> Catalog {
        let mut catalog = Catalog {
            entries: Vec::with_capacity(entries.len()),
            canonical,
            sources: Vec::new(),
            by_source: HashMap::new(),
            exact: HashMap::new(),
            folded: HashMap::new(),
            alias_exact: HashMap::new(),
            alias_folded: HashMap::new(),
            tail: HashMap::new(),
            whole: HashMap::new(),
        };
        for SourceEntry { key, price } in entries {
            let index = catalog.entries.len();
            let mut direct: Vec<String> = Vec::new();
            for identity in [key.trim(), price.source_model_id.trim()] {
                if !identity.is_empty() && !direct.iter().any(|seen| seen == identity) {
                    direct.push(identity.to_string());
                }
            }
            let aliases: Vec<String> = if price.source == source::MODELS_DEV {
                models_dev_model(&price.source_model_id)
                    .map(|model| vec![model.to_string()])
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            for identity in &direct {
                push(&mut catalog.exact, identity.clone(), index);
                push(&mut catalog.folded, identity.to_lowercase(), index);
                push(&mut catalog.tail, canonical_tail(identity), index);
                push(&mut catalog.whole, canonical_id(identity), index);
            }
            for identity in &aliases {
                push(&mut catalog.alias_exact, identity.clone(), index);
                push(&mut catalog.alias_folded, identity.to_lowercase(), index);
                push(&mut catalog.tail, canonical_tail(identity), index);
                push(&mut catalog.whole, canonical_id(identity), index);
            }
            let source_name = price.source.trim().to_string();
            if !catalog.by_source.contains_key(&source_name) {
                catalog.sources.push(source_name.clone());
            }
            catalog
                .by_source
                .entry(source_name)
                .or_default()
                .push(index);
            catalog.entries.push(Entry {
                key,
                price,
                direct,
                aliases,
            });
        }
        catalog
            .sources
            .sort_by(|left, right| (priority(left), left).cmp(&(priority(right), right)));
        catalog
    }

    fn of_source(&self, hits: Option<&Vec<usize>>, source_name: &str) -> Vec<usize> {
        hits.into_iter()
            .flatten()
            .copied()
            .filter(|index| self.entries[*index].price.source.trim() == source_name)
            .collect()
    }

    /// The first index with hits within one source.
    fn indexed(&self, model: &str, source_name: &str) -> Vec<usize> {
        let lower = model.to_lowercase();
        let lookups: [(&HashMap<String, Vec<usize>>, String); 6] = [
            (&self.exact, model.to_string()),
            (&self.folded, lower.clone()),
            (&self.alias_exact, model.to_string()),
            (&self.alias_folded, lower),
            (&self.tail, canonical_tail(model)),
            (&self.whole, canonical_id(model)),
        ];
        for (index, identity) in lookups {
            if identity.is_empty() {
                continue;
            }
            let hits = self.of_source(index.get(&identity), source_name);
            if !hits.is_empty() {
                return hits;
            }
        }
        Vec::new()
    }

    /// The automatic match for `model`: a unique strong match, else `None`.
    pub fn automatic(&self, model: &str) -> Option<&ModelPrice> {
        let model = model.trim();
        if model.is_empty() {
            return None;
        }
        for source_name in &self.sources {
            if source_name == source::MODELS_DEV && !self.canonical.is_empty() {
                if let [only] = self.official(model)[..] {
                    return Some(&self.entries[only].price);
                }
                if model.contains('/') {
                    let mut hits = self.of_source(self.exact.get(model), source_name);
                    if hits.is_empty() {
                        hits = self.of_source(self.folded.get(&model.to_lowercase()), source_name);
                    }
                    if let [only] = hits[..] {
                        return Some(&self.entries[only].price);
                    }
                }
                continue;
            }
            if let [only] = self.indexed(model, source_name)[..] {
                return Some(&self.entries[only].price);
            }
        }
        None
    }

    fn official(&self, model: &str) -> Vec<usize> {
        let Some(canonical) = self.canonical.canonical_id(model) else {
            return Vec::new();
        };
        self.by_source
            .get(source::MODELS_DEV)
            .into_iter()
            .flatten()
            .copied()
            .filter(|index| {
                let id = self.entries[*index].price.source_model_id.trim();
                self.canonical.is_official(id) && id.eq_ignore_ascii_case(canonical)
            })
            .collect()
    }

    /// Scored candidates per source (each source's index hits, or all its entries
    /// when there are none), official models.dev entries first, then by score.
    pub fn candidates(&self, model: &str) -> Vec<Candidate> {
        let model = model.trim();
        let mut all = Vec::new();
        for source_name in &self.sources {
            let mut hits = self.indexed(model, source_name);
            if hits.is_empty() {
                hits = self.by_source.get(source_name).cloned().unwrap_or_default();
            }
            let mut found: Vec<Candidate> = hits
                .into_iter()
                .filter_map(|index| self.candidate(model, &self.entries[index]))
                .collect();
            found.sort_by(|left, right| {
                let official = |candidate: &Candidate| {
                    candidate.price.source == source::MODELS_DEV
                        && self.canonical.is_official(&candidate.source_model_id)
                };
                official(right)
                    .cmp(&official(left))
                    .then(right.score.total_cmp(&left.score))
                    .then_with(|| left.source_model_id.cmp(&right.source_model_id))
            });
            found.truncate(MAX_CANDIDATES);
            all.extend(found);
        }
        all
    }

    fn candidate(&self, model: &str, entry: &Entry) -> Option<Candidate> {
        let mut best = (0.0, "");
        for identity in &entry.direct {
            let scored = identity_similarity(model, identity);
            if scored.0 > best.0 {
                best = scored;
            }
        }
        for identity in &entry.aliases {
            let score = identity_similarity(model, identity).0.min(0.94);
            if score > best.0 {
                best = (score, "same-model-with-provider-prefix");
            }
        }
        let (score, reason) = best;
        let weak_family = score >= MIN_FAMILY_SCORE && reason == "same-model-family";
        if score < MIN_SCORE && !weak_family {
            return None;
        }
        let source_model_id = match entry.price.source_model_id.trim() {
            "" => entry.key.clone(),
            id => id.to_string(),
        };
        Some(Candidate {
            source_model_id,
            score: (score * 100.0).round() / 100.0,
            reason,
            price: entry.price.clone(),
        })
    }

    /// Without requested models: every id the sources know (models.dev contributes
    /// its model part) with a unique automatic match.
    pub fn select_all(&self) -> Selection {
        let ids: BTreeSet<&str> = self
            .entries
            .iter()
            .filter_map(|entry| {
                if entry.price.source == source::MODELS_DEV {
                    models_dev_model(&entry.price.source_model_id)
                } else {
                    Some(entry.key.as_str())
                }
            })
            .collect();
        let prices = ids
            .into_iter()
            .filter_map(|id| {
                self.automatic(id)
                    .map(|price| (id.to_string(), price.clone()))
            })
            .collect();
        Selection {
            prices,
            ..Selection::default()
        }
    }

    /// For requested ids: a match, else candidates, else unmatched.
    pub fn select(&self, models: &[String]) -> Selection {
        let mut selection = Selection::default();
        for model in requested(models) {
            if let Some(price) = self.automatic(&model) {
                selection.prices.insert(model, price.clone());
                continue;
            }
            let candidates = self.candidates(&model);
            if candidates.is_empty() {
                selection.unmatched.push(model);
            } else {
                selection.candidates.push((model, candidates));
            }
        }
        selection
    }

    /// Whether every requested id already has an automatic match.
    pub fn covers(&self, models: &[String]) -> bool {
        let models = requested(models);
        !models.is_empty() && models.iter().all(|model| self.automatic(model).is_some())
    }
}

/// Requested ids, trimmed, blanks and repeats dropped, in order.
pub fn requested(models: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    models
        .iter()
        .map(|model| model.trim().to_string())
        .filter(|model| !model.is_empty() && seen.insert(model.clone()))
        .collect()
}

/// The rank of a source: models.dev first, unknown sources last.
pub fn source_priority(source_name: &str) -> usize {
    priority(source_name)
}

/// How alike two model ids are, and why: (score in 0..=1, reason).
pub fn identity_similarity(left: &str, right: &str) -> (f64, &'static str) {
    if left == right {
        return (1.0, "exact-model-id");
    }
    if left.to_lowercase() == right.to_lowercase() {
        return (0.98, "case-insensitive-model-id");
    }
    let (left_tail, right_tail) = (canonical_tail(left), canonical_tail(right));
    if !left_tail.is_empty() && !right_tail.is_empty() {
        if left_tail == right_tail {
            return (0.94, "same-model-with-provider-prefix");
        }
        if left_tail.contains(&right_tail) || right_tail.contains(&left_tail) {
            return (0.78, "model-name-contains");
        }
    }
    let (left_whole, right_whole) = (canonical_id(left), canonical_id(right));
    if !left_whole.is_empty() && !right_whole.is_empty() {
        if left_whole == right_whole {
            return (0.9, "normalized-model-name");
        }
        if left_whole.contains(&right_whole) || right_whole.contains(&left_whole) {
            return (0.74, "normalized-name-contains");
        }
    }
    let (left_tokens, right_tokens) = (similarity_tokens(left), similarity_tokens(right));
    let jaccard = token_jaccard(&left_tokens, &right_tokens);
    let edit = edit_similarity(&left_tail, &right_tail);
    let score = (jaccard * 0.86).max(edit * 0.82);
    if jaccard >= 0.65 {
        (score.max(0.72), "shared-model-tokens")
    } else if jaccard >= 0.4 {
        (score.max(0.58), "shared-model-tokens")
    } else if same_family(&left_tokens, &right_tokens) {
        (score.max(0.46), "same-model-family")
    } else if edit >= 0.68 {
        (score, "similar-model-name")
    } else {
        (score, "weak-similarity")
    }
}

/// Lowercase letter/digit runs, `models` dropped.
fn tokens(value: &str) -> Vec<String> {
    value
        .trim()
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|token| !token.is_empty() && *token != "models")
        .map(str::to_string)
        .collect()
}

/// The id's tokens joined: `GPT-5.1` → `gpt51`.
pub fn canonical_id(value: &str) -> String {
    tokens(value).concat()
}

/// The last path segment (not `models`)'s tokens joined.
pub fn canonical_tail(value: &str) -> String {
    let trimmed = value.trim();
    let last = trimmed
        .split('/')
        .map(str::trim)
        .rev()
        .find(|part| !part.is_empty() && !part.eq_ignore_ascii_case("models"))
        .unwrap_or(trimmed);
    canonical_id(last)
}

fn split_alphanumeric(token: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut previous = 0;
    for c in token.chars() {
        let class = if c.is_alphabetic() {
            1
        } else if c.is_numeric() {
            2
        } else {
            previous = 0;
            parts.push(String::new());
            continue;
        };
        if previous != class || parts.is_empty() {
            parts.push(String::new());
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
        previous = class;
    }
    parts.into_iter().filter(|part| !part.is_empty()).collect()
}

fn token_aliases(token: &str) -> &'static [&'static str] {
    match token {
        "mimo" => &["minimax", "m2", "m25"],
        "minimax" => &["mimo"],
        "m2" | "m25" => &["mimo", "minimax"],
        "low" => &["lite"],
        "lite" => &["low"],
        "flashlow" => &["flashlite", "flash", "lite"],
        "flashlite" => &["flashlow", "flash", "low"],
        _ => &[],
    }
}

fn similarity_tokens(value: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |token: &str| {
        let token = token.trim().to_lowercase();
        if token.is_empty() || matches!(token.as_str(), "models" | "latest" | "preview" | "free") {
            return;
        }
        if seen.insert(token.clone()) {
            out.push(token);
        }
    };
    for token in tokens(value) {
        add(&token);
        let splits = split_alphanumeric(&token);
        for split in &splits {
            add(split);
        }
        for alias in token_aliases(&token) {
            add(alias);
        }
        for split in &splits {
            for alias in token_aliases(split) {
                add(alias);
            }
        }
    }
    out
}

fn same_family(left: &[String], right: &[String]) -> bool {
    ["qwen", "gemini", "minimax", "mimo"]
        .iter()
        .any(|family| left.iter().any(|t| t == family) && right.iter().any(|t| t == family))
}

fn token_jaccard(left: &[String], right: &[String]) -> f64 {
    if left.is_empty() || right.is_empty() {
        return 0.0;
    }
    let left: BTreeSet<&String> = left.iter().collect();
    let right: BTreeSet<&String> = right.iter().collect();
    let shared = left.intersection(&right).count();
    let union = left.len() + right.len() - shared;
    if union == 0 {
        0.0
    } else {
        shared as f64 / union as f64
    }
}

fn edit_similarity(left: &str, right: &str) -> f64 {
    if left.is_empty() || right.is_empty() {
        return 0.0;
    }
    let left: Vec<char> = left.chars().collect();
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    let mut current = vec![0; right.len() + 1];
    for (i, l) in left.iter().enumerate() {
        current[0] = i + 1;
        for (j, r) in right.iter().enumerate() {
            let cost = usize::from(l != r);
            current[j + 1] = (current[j] + 1)
                .min(previous[j + 1] + 1)
                .min(previous[j] + cost);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let longest = left.len().max(right.len());
    1.0 - previous[right.len()] as f64 / longest as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::sources::parse;

    fn catalog(sources: &[(&str, &str)]) -> Catalog {
        let mut entries = Vec::new();
        let mut canonical = Canonical::default();
        for (name, body) in sources {
            let parsed = parse(name, body.as_bytes(), 1).expect("source");
            canonical.merge(&parsed.canonical);
            entries.extend(parsed.entries);
        }
        Catalog::new(entries, canonical)
    }

    const MODELS_DEV: &str = r#"{"providers":{
        "openai":{"models":{"gpt-5":{"cost":{"input":1.25,"output":10}}}},
        "azure":{"models":{"gpt-5":{"cost":{"input":1.3,"output":11}},"only-azure":{"cost":{"input":9,"output":9}}}}},
        "models":{"openai/gpt-5":{}}}"#;
    const LITELLM: &str = r#"{"gpt-5":{"input_cost_per_token":2e-6,"output_cost_per_token":2e-5},
        "only-azure":{"input_cost_per_token":1e-6,"output_cost_per_token":1e-6},
        "azure/claude-x":{"input_cost_per_token":1e-6},"bedrock/claude-x":{"input_cost_per_token":2e-6}}"#;

    #[test]
    fn models_dev_official_entry_wins_and_fuzzy_names_fall_through() {
        let catalog = catalog(&[("models.dev", MODELS_DEV), ("litellm", LITELLM)]);
        let gpt5 = catalog.automatic("gpt-5").expect("official");
        assert_eq!(gpt5.source_model_id, "openai/gpt-5");
        // Not official on models.dev (no canonical id): LiteLLM's unique exact key.
        let azure = catalog.automatic("only-azure").expect("litellm");
        assert_eq!(azure.source, "litellm");
        // An id with a provider gets models.dev's exact key.
        assert_eq!(
            catalog
                .automatic("azure/gpt-5")
                .expect("exact")
                .source_model_id,
            "azure/gpt-5"
        );
        // Two LiteLLM entries share the tail `claude-x`: ambiguous, nothing saved.
        assert!(catalog.automatic("claude-x").is_none());
        let candidates = catalog.candidates("claude-x");
        assert!(candidates.len() >= 2);
        assert!(
            candidates
                .iter()
                .all(|c| c.reason == "same-model-with-provider-prefix")
        );
        assert!(candidates.iter().all(|c| c.score == 0.94));
    }

    #[test]
    fn selection_without_models_saves_unique_matches_only() {
        let catalog = catalog(&[("models.dev", MODELS_DEV), ("litellm", LITELLM)]);
        let selection = catalog.select_all();
        let keys: Vec<_> = selection.prices.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec!["azure/claude-x", "bedrock/claude-x", "gpt-5", "only-azure"]
        );
        assert_eq!(selection.prices["gpt-5"].source, "models.dev");

        let requested = vec![
            " gpt-5 ".to_string(),
            "claude-x".into(),
            "zzz-unknown-qqq".into(),
            "gpt-5".into(),
        ];
        let selection = catalog.select(&requested);
        assert_eq!(selection.prices.len(), 1);
        assert_eq!(selection.candidates[0].0, "claude-x");
        assert_eq!(selection.unmatched, vec!["zzz-unknown-qqq".to_string()]);
        assert!(catalog.covers(&["gpt-5".to_string()]));
        assert!(!catalog.covers(&["claude-x".to_string()]));
    }

    #[test]
    fn similarity_follows_the_documented_scores() {
        assert_eq!(
            identity_similarity("gpt-5", "gpt-5"),
            (1.0, "exact-model-id")
        );
        assert_eq!(
            identity_similarity("GPT-5", "gpt-5"),
            (0.98, "case-insensitive-model-id")
        );
        assert_eq!(
            identity_similarity("openai/gpt-5", "azure/gpt-5"),
            (0.94, "same-model-with-provider-prefix")
        );
        assert_eq!(
            identity_similarity("gpt-5", "gpt-5-mini").1,
            "model-name-contains"
        );
        assert_eq!(
            identity_similarity("qwen3-max", "qwen-plus").1,
            "same-model-family"
        );
        assert_eq!(canonical_id("openai/GPT-5.1"), "openaigpt51");
        assert_eq!(canonical_tail("openai/models/gpt-5.1/models"), "gpt51");
        assert_eq!(split_alphanumeric("gpt5o1"), vec!["gpt", "5", "o", "1"]);
    }
}
