//! One credential as CPA's `GET /v0/management/auth-files` lists it.
//!
//! CPA answers `{"files":[…]}`; older or proxied answers are accepted in the other shapes
//! the Go server accepted: a bare array, an object holding the list under `auth_files`,
//! `authFiles`, `files`, `items` or `data`, or one entry on its own. Values are read
//! leniently (numbers and booleans stringified, surrounding space trimmed), because CPA's
//! plugins may fill entries with other types than CPA itself.

#![warn(missing_docs)]

use serde_json::{Map, Value};

/// The identity and state of one credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthFileEntry {
    /// CPA's runtime id (`id`); differs from `name` for credentials a plugin expanded.
    pub runtime_id: String,
    /// The physical file (`name`, `file_name`, `fileName`, else `id`).
    pub name: String,
    /// CPA's stable index of the credential (the `auth_index` events carry).
    pub auth_index: String,
    /// Normalised provider (`provider`, else `type`), see [`normalize_provider`].
    pub provider: String,
    /// `account`, `email`, `display_account` or `displayAccount`; empty when it only
    /// repeats the file name.
    pub account_snapshot: String,
    /// The provider's account id (ChatGPT account id, Google project …).
    pub account_id: String,
    /// The label CPA shows.
    pub label: String,
    /// The account e-mail, when listed.
    pub email: String,
    /// CPA routes no requests to it (`disabled`, or a `disabled`/`inactive` status).
    pub disabled: bool,
    /// CPA's `status` text (`active`, `disabled`, `error` …).
    pub status: String,
}

/// Why a listing could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    /// The body is not JSON.
    #[error("decode CPA auth files: {0}")]
    Json(String),
    /// The JSON holds no listing in any accepted shape.
    #[error("decode CPA auth files: unexpected JSON shape")]
    Shape,
}

/// The entries of a listing body, empty objects skipped.
pub fn parse_listing(body: &[u8]) -> Result<Vec<Map<String, Value>>, ListingError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| ListingError::Json(error.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut object) => {
            let list = ["auth_files", "authFiles", "files", "items", "data"]
                .iter()
                .find_map(|key| match object.get(*key) {
                    Some(Value::Array(_)) => object.remove(*key),
                    _ => None,
                });
            match list {
                Some(Value::Array(items)) => items,
                _ if ["name", "file_name", "fileName", "id"]
                    .iter()
                    .any(|key| object.contains_key(*key)) =>
                {
                    vec![Value::Object(object)]
                }
                _ => return Err(ListingError::Shape),
            }
        }
        Value::Null => Vec::new(),
        _ => return Err(ListingError::Shape),
    };
    Ok(items
        .into_iter()
        .filter_map(|item| match item {
            Value::Object(object) if !object.is_empty() => Some(object),
            _ => None,
        })
        .collect())
}

/// The first of `keys` holding a non-empty value, as trimmed text.
pub fn text(object: &Map<String, Value>, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|key| object.get(*key))
        .map(stringify)
        .map(|text| text.trim().to_string())
        .find(|text| !text.is_empty())
        .unwrap_or_default()
}

fn stringify(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => other.to_string(),
    }
}

/// Lower-cased, `_` → `-`, and CPA's several spellings of xAI folded into `xai`.
pub fn normalize_provider(provider: &str) -> String {
    let provider = provider.trim().to_ascii_lowercase().replace('_', "-");
    match provider.as_str() {
        "x-ai" | "grok" => "xai".to_string(),
        _ => provider,
    }
}

const ACCOUNT_ID_KEYS: &[&str] = &[
    "account_id",
    "accountId",
    "chatgpt_account_id",
    "chatgptAccountId",
    "project_id",
    "projectId",
    "gemini_virtual_project",
    "geminiVirtualProject",
    "sub",
];

/// The provider account id: top level first, then inside `id_token`, `idToken`,
/// `metadata` and `attributes` (and an `id_token` nested in those).
fn account_id(object: &Map<String, Value>) -> String {
    let direct = text(object, ACCOUNT_ID_KEYS);
    if !direct.is_empty() {
        return direct;
    }
    for container in ["id_token", "idToken", "metadata", "attributes"] {
        let Some(Value::Object(inner)) = object.get(container) else {
            continue;
        };
        let found = text(inner, ACCOUNT_ID_KEYS);
        if !found.is_empty() {
            return found;
        }
        for nested in ["id_token", "idToken"] {
            if let Some(Value::Object(token)) = inner.get(nested) {
                let found = text(token, ACCOUNT_ID_KEYS);
                if !found.is_empty() {
                    return found;
                }
            }
        }
    }
    String::new()
}

fn disabled(object: &Map<String, Value>) -> bool {
    match object.get("disabled") {
        Some(Value::Bool(flag)) => return *flag,
        Some(Value::Number(number)) => return number.as_f64().is_some_and(|value| value != 0.0),
        Some(Value::String(text)) => {
            let text = text.trim();
            if text.eq_ignore_ascii_case("true") || text == "1" {
                return true;
            }
        }
        _ => {}
    }
    let status = text(object, &["status", "state"]).to_ascii_lowercase();
    status == "disabled" || status == "inactive"
}

impl AuthFileEntry {
    /// Reads one listed entry leniently (see the module docs).
    pub fn from_object(object: &Map<String, Value>) -> AuthFileEntry {
        let name = text(object, &["name", "file_name", "fileName", "id"]);
        let mut account_snapshot = text(
            object,
            &["account", "email", "display_account", "displayAccount"],
        );
        if account_snapshot == name {
            account_snapshot.clear();
        }
        AuthFileEntry {
            runtime_id: text(object, &["id"]),
            auth_index: text(object, &["auth_index", "authIndex", "auth-index"]),
            provider: normalize_provider(&text(object, &["provider", "type"])),
            account_snapshot,
            account_id: account_id(object),
            label: text(object, &["label"]),
            email: text(object, &["email"]),
            disabled: disabled(object),
            status: text(object, &["status", "state"]),
            name,
        }
    }

    /// Label, else account, else file name: what a person recognises the credential by.
    pub fn display(&self) -> &str {
        [&self.account_snapshot, &self.label, &self.name]
            .into_iter()
            .find(|text| !text.is_empty())
            .map(String::as_str)
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn entry(json: &str) -> AuthFileEntry {
        let value: Value = serde_json::from_str(json).unwrap();
        AuthFileEntry::from_object(value.as_object().unwrap())
    }

    #[test]
    fn listings_come_in_several_shapes() {
        let shapes: [&[u8]; 5] = [
            br#"{"files":[{"name":"a.json"},{}]}"#,
            br#"[{"name":"a.json"}]"#,
            br#"{"data":[{"name":"a.json"}],"total":1}"#,
            br#"{"name":"a.json","auth_index":"1"}"#,
            br#"{"auth_files":[{"file_name":"a.json"}]}"#,
        ];
        for body in shapes {
            assert_eq!(parse_listing(body).unwrap().len(), 1, "{body:?}");
        }
        assert_eq!(parse_listing(b"{}"), Err(ListingError::Shape));
        assert!(matches!(parse_listing(b"nope"), Err(ListingError::Json(_))));
    }

    #[test]
    fn identities_read_cpa_fields() {
        let codex = entry(
            r#"{"id":"codex-a.json","name":"codex-a.json","auth_index":"3f9c","type":"codex","email":"a@example.com","disabled":false,"status":"active","id_token":{"chatgpt_account_id":"acct-1","plan_type":"plus"}}"#,
        );
        assert_eq!(codex.runtime_id, "codex-a.json");
        assert_eq!(codex.provider, "codex");
        assert_eq!(codex.account_snapshot, "a@example.com");
        assert_eq!(codex.account_id, "acct-1");
        assert!(!codex.disabled);

        let grok = entry(
            r#"{"file_name":"grok.json","authIndex":7,"provider":"X_AI","account":"grok.json","state":"inactive"}"#,
        );
        assert_eq!(grok.name, "grok.json");
        assert_eq!(grok.auth_index, "7");
        assert_eq!(grok.provider, "xai");
        assert_eq!(
            grok.account_snapshot, "",
            "a snapshot equal to the file name is none"
        );
        assert!(grok.disabled);
        assert!(entry(r#"{"name":"x","disabled":"1"}"#).disabled);
        assert!(entry(r#"{"name":"x","disabled":2}"#).disabled);
        assert_eq!(
            entry(r#"{"name":"x","metadata":{"id_token":{"sub":"u-1"}}}"#).account_id,
            "u-1"
        );
    }
}
