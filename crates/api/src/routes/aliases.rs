//! API key aliases: `GET|PUT /v0/management/api-key-aliases` and
//! `DELETE /v0/management/api-key-aliases/{hash}` (analytics.md §6).
//!
//! Keys are only ever handled as their SHA-256 (`apiKeyHash`); no endpoint takes or
//! returns a raw key. Every refusal is a 400 whose code says why
//! (`api_key_aliases_required`, `api_key_alias_duplicate`, else `request_failed`).

use std::collections::HashMap;

use actix_web::{HttpResponse, web};
use cpamp_domain::StoreError;
use cpamp_domain::prices::aliases::{AliasError, AliasItem, AliasPut, ApiKeyAlias, normalize_hash};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::analytics::{json, json_bytes, now_ms};
use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorCode};
use crate::state::{AppState, Store};

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    config.service(
        super::resource("/v0/management/api-key-aliases")
            .route(web::get().to(list::<S>))
            .route(web::put().to(put::<S>)),
    );
    config.service(
        super::resource("/v0/management/api-key-aliases/{hash}")
            .route(web::delete().to(delete::<S>)),
    );
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AliasJson<'a> {
    api_key_hash: &'a str,
    alias: &'a str,
    updated_at_ms: i64,
}

#[derive(Serialize)]
struct Items<'a> {
    items: Vec<AliasJson<'a>>,
}

fn items(aliases: &[ApiKeyAlias]) -> Items<'_> {
    Items {
        items: aliases
            .iter()
            .map(|alias| AliasJson {
                api_key_hash: &alias.api_key_hash,
                alias: &alias.alias,
                updated_at_ms: alias.updated_at_ms,
            })
            .collect(),
    }
}

async fn list<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let aliases = state.store.api_key_aliases().await?;
    json(&items(&aliases))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemBody {
    #[serde(default)]
    api_key_hash: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    updated_at_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutBody {
    #[serde(default)]
    items: Option<Vec<ItemBody>>,
    #[serde(default)]
    active_api_key_hashes: Option<Vec<String>>,
    #[serde(default)]
    allow_orphan_alias_cleanup: Option<bool>,
}

fn refused(error: AliasError) -> ApiError {
    let code = match error {
        AliasError::Duplicate(_) => ErrorCode::ApiKeyAliasDuplicate,
        _ => ErrorCode::RequestFailed,
    };
    ApiError::bad_request(code, error.to_string())
}

async fn put<S: Store>(
    auth: AdminAuth,
    state: web::Data<AppState<S>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: PutBody = super::setup::decode_body(&body)?;
    let items = body.items.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::ApiKeyAliasesRequired,
            "api key aliases are required",
        )
    })?;
    let request = AliasPut {
        items: items
            .into_iter()
            .map(|item| AliasItem {
                api_key_hash: item.api_key_hash,
                alias: item.alias,
                updated_at_ms: item.updated_at_ms,
            })
            .collect(),
        active_api_key_hashes: body.active_api_key_hashes.unwrap_or_default(),
        allow_orphan_alias_cleanup: body.allow_orphan_alias_cleanup.unwrap_or(false),
    };
    if !request.items.is_empty() {
        state
            .store
            .put_api_key_aliases(request, now_ms())
            .await
            .map_err(|error| match error {
                // Another writer took the alias between the check and the write.
                StoreError::Conflict(message) => {
                    ApiError::bad_request(ErrorCode::ApiKeyAliasDuplicate, message)
                }
                other => ApiError::from(other),
            })?
            .map_err(refused)?;
    }
    list(auth, state).await
}

async fn delete<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hash = normalize_hash(&path).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::RequestFailed,
            "valid apiKeyHash is required: the path must end in the 64 hexadecimal characters of the key's SHA-256",
        )
    })?;
    state.store.delete_api_key_alias(&hash).await?;
    json(&serde_json::json!({ "ok": true }))
}

/// `value` as the JSON answer, with each client key's alias shown beside it: every
/// object with an `api_key_hash` that has an alias gains `"api_key_alias"`, and each
/// heatmap `api_key_contributors` entry gains its `"label"`. Without aliases the
/// answer is serialized directly.
pub(crate) async fn json_bytes_with_aliases<S: Store, T: Serialize>(
    store: &S,
    value: &T,
) -> Result<bytes::Bytes, ApiError> {
    let aliases = store.api_key_aliases().await?;
    if aliases.is_empty() {
        return json_bytes(value);
    }
    let by_hash: HashMap<&str, &str> = aliases
        .iter()
        .map(|alias| (alias.api_key_hash.as_str(), alias.alias.as_str()))
        .collect();
    let mut tree = serde_json::to_value(value)
        .map_err(|error| ApiError::internal("encode response", &error))?;
    annotate(&mut tree, &by_hash, false);
    json_bytes(&tree)
}

fn annotate(value: &mut Value, aliases: &HashMap<&str, &str>, contributors: bool) {
    match value {
        Value::Object(object) => {
            let hash = object
                .get("api_key_hash")
                .and_then(Value::as_str)
                .map(|hash| hash.trim().to_ascii_lowercase());
            if let Some(alias) = hash.and_then(|hash| aliases.get(hash.as_str()).copied()) {
                object.insert("api_key_alias".to_string(), Value::from(alias));
            }
            if contributors
                && let Some(alias) = object.get("key").and_then(Value::as_str).and_then(|key| {
                    aliases
                        .get(key.trim().to_ascii_lowercase().as_str())
                        .copied()
                })
            {
                object.insert("label".to_string(), Value::from(alias));
            }
            for (key, child) in object.iter_mut() {
                annotate(child, aliases, key == "api_key_contributors");
            }
        }
        Value::Array(items) => {
            for item in items {
                annotate(item, aliases, contributors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_shown_beside_key_hashes_and_as_contributor_labels() {
        let hash = "ab".repeat(32);
        let aliases = HashMap::from([(hash.as_str(), "CI bot")]);
        let mut answer = serde_json::json!({
            "api_key_stats": [{"id": hash, "api_key_hash": hash.to_uppercase()}, {"api_key_hash": "other"}],
            "heatmap": [{"api_key_contributors": [{"key": hash}], "model_contributors": [{"key": hash}]}],
        });
        annotate(&mut answer, &aliases, false);
        assert_eq!(answer["api_key_stats"][0]["api_key_alias"], "CI bot");
        assert!(answer["api_key_stats"][1].get("api_key_alias").is_none());
        assert_eq!(
            answer["heatmap"][0]["api_key_contributors"][0]["label"],
            "CI bot"
        );
        assert!(
            answer["heatmap"][0]["model_contributors"][0]
                .get("label")
                .is_none()
        );
    }
}
