//! The credentials of the fake CPA: what `GET /v0/management/auth-files` lists (with CPA's
//! real field names), what `PATCH auth-files/status` and `DELETE auth-files` change, and the
//! scripted upstream answers of `POST api-call`.
//!
//! CPA facts reproduced (v7.2.x `internal/api/handlers/management`):
//! - the list is `{"files":[…]}` sorted by lower-cased name; `?name=` matches the runtime id
//!   or the file name, `?auth_index=` the index;
//! - a status change looks the credential up by runtime id (then file name) without an
//!   index, by name and index with one; it sets `disabled`, `status` (`disabled`/`active`)
//!   and `status_message` (`disabled via management API`) and answers
//!   `{"status":"ok","disabled":…}`; a missing credential is 404 `auth file not found`;
//! - `api-call` substitutes `$TOKEN$` with the credential's token and answers
//!   `{"status_code","header","body"}`; an upstream that cannot be reached is 502
//!   `{"error":"request failed"}`.

use std::time::Duration;

use serde_json::{Map, Value, json};

/// One credential. `id` is CPA's runtime id; `name` the physical file. They are equal for
/// ordinary files and differ for credentials a plugin expanded from one file.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthFile {
    /// CPA's runtime id.
    pub id: String,
    /// The physical auth file name.
    pub name: String,
    /// The `auth_index` usage payloads carry for this credential.
    pub auth_index: String,
    /// The provider (`codex`, `claude`, `gemini`, …).
    pub provider: String,
    /// The label CPA shows.
    pub label: String,
    /// The account e-mail, if known.
    pub email: Option<String>,
    /// The account name, if known.
    pub account: Option<String>,
    /// CPA's `account_type` field (`email` for e-mail accounts), if set.
    pub account_type: Option<String>,
    /// The Google Cloud project id (Gemini credentials).
    pub project_id: Option<String>,
    /// Whether CPA routes no requests to this credential.
    pub disabled: bool,
    /// `active`, `disabled`, … as CPA reports it.
    pub status: String,
    /// Why the status was set (for example `disabled via management API`).
    pub status_message: String,
    /// Codex id-token claims CPA decodes into `id_token`.
    pub chatgpt_account_id: Option<String>,
    /// The ChatGPT plan from the id token (`plus`, `pro`, …).
    pub plan_type: Option<String>,
    /// Successful requests CPA counted for this credential.
    pub success: u64,
    /// Failed requests CPA counted for this credential.
    pub failed: u64,
    /// Further members copied into the listing as they are.
    pub extra: Map<String, Value>,
}

impl AuthFile {
    /// An enabled file-backed credential whose runtime id is its file name.
    pub fn new(name: &str, auth_index: &str, provider: &str, email: &str) -> AuthFile {
        AuthFile {
            id: name.to_string(),
            name: name.to_string(),
            auth_index: auth_index.to_string(),
            provider: provider.to_string(),
            label: email.to_string(),
            email: (!email.is_empty()).then(|| email.to_string()),
            account: None,
            account_type: None,
            project_id: None,
            disabled: false,
            status: "active".to_string(),
            status_message: String::new(),
            chatgpt_account_id: None,
            plan_type: None,
            success: 0,
            failed: 0,
            extra: Map::new(),
        }
    }

    /// The entry as CPA lists it.
    pub fn to_json(&self) -> Value {
        let mut entry = json!({
            "id": self.id,
            "auth_index": self.auth_index,
            "name": self.name,
            "type": self.provider,
            "provider": self.provider,
            "label": self.label,
            "status": self.status,
            "status_message": self.status_message,
            "disabled": self.disabled,
            "unavailable": false,
            "runtime_only": false,
            "source": "file",
            "size": 512,
            "success": self.success,
            "failed": self.failed,
            "recent_requests": [],
            "path": format!("/root/.cli-proxy-api/{}", self.name),
            "created_at": "2026-08-01T08:00:00Z",
            "modtime": "2026-08-20T10:15:00Z",
            "updated_at": "2026-08-20T10:15:00Z",
        });
        let object = entry.as_object_mut();
        if let Some(object) = object {
            for (key, value) in [
                ("email", &self.email),
                ("account", &self.account),
                ("account_type", &self.account_type),
                ("project_id", &self.project_id),
            ] {
                if let Some(value) = value {
                    object.insert(key.to_string(), Value::String(value.clone()));
                }
            }
            let mut claims = Map::new();
            if let Some(id) = &self.chatgpt_account_id {
                claims.insert("chatgpt_account_id".into(), Value::String(id.clone()));
            }
            if let Some(plan) = &self.plan_type {
                claims.insert("plan_type".into(), Value::String(plan.clone()));
            }
            if !claims.is_empty() {
                object.insert("id_token".into(), Value::Object(claims));
            }
            for (key, value) in &self.extra {
                object.insert(key.clone(), value.clone());
            }
        }
        entry
    }

    /// The file's content as `auth-files/download` serves it (no real token inside).
    pub fn content(&self) -> Value {
        let mut content = json!({
            "type": self.provider,
            "email": self.email.clone().unwrap_or_default(),
            "disabled": self.disabled,
            "access_token": format!("fake-access-token-{}", self.auth_index),
        });
        if let (Some(project), Some(object)) = (&self.project_id, content.as_object_mut()) {
            object.insert("project_id".into(), Value::String(project.clone()));
        }
        content
    }

    fn set_disabled(&mut self, disabled: bool) {
        self.disabled = disabled;
        if disabled {
            self.status = "disabled".to_string();
            self.status_message = "disabled via management API".to_string();
        } else {
            self.status = "active".to_string();
            self.status_message.clear();
        }
    }
}

/// One `PATCH auth-files/status` CPA applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The runtime id of the credential that changed.
    pub id: String,
    /// The physical auth file name.
    pub name: String,
    /// The credential's `auth_index`.
    pub auth_index: String,
    /// The new state: true when it was disabled.
    pub disabled: bool,
}

/// A scripted upstream answer for `api-call`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCallAnswer {
    /// The upstream HTTP status code.
    pub status_code: u16,
    /// The upstream response body.
    pub body: String,
    /// The upstream response headers, in order.
    pub header: Vec<(String, String)>,
    /// How long the upstream takes to answer.
    pub delay: Duration,
}

impl ApiCallAnswer {
    /// An answer with `status_code` and `body` as JSON.
    pub fn json(status_code: u16, body: &Value) -> ApiCallAnswer {
        ApiCallAnswer {
            status_code,
            body: body.to_string(),
            header: vec![("Content-Type".to_string(), "application/json".to_string())],
            delay: Duration::ZERO,
        }
    }

    /// The same answer after `delay`.
    pub fn delayed(mut self, delay: Duration) -> ApiCallAnswer {
        self.delay = delay;
        self
    }
}

/// One `api-call` the fake received, after `$TOKEN$` substitution.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCallRecord {
    /// The credential the call was made with.
    pub auth_index: String,
    /// The HTTP method requested.
    pub method: String,
    /// The upstream URL requested.
    pub url: String,
    /// The request headers, with `$TOKEN$` replaced by the credential's token.
    pub header: Vec<(String, String)>,
    /// The request body.
    pub data: String,
}

/// Answers `api-call` requests whose auth index equals `auth_index` (empty: any) and whose
/// URL contains `url_contains`. `times: None` answers forever.
#[derive(Debug, Clone)]
pub(crate) struct ApiCallRule {
    pub auth_index: String,
    pub url_contains: String,
    pub answer: ApiCallAnswer,
    pub times: Option<u32>,
}

/// What the fake's credential side holds.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    pub files: Vec<AuthFile>,
    pub status_changes: Vec<StatusChange>,
    pub deleted: Vec<String>,
    pub api_rules: Vec<ApiCallRule>,
    pub api_calls: Vec<ApiCallRecord>,
    /// Delay before `GET auth-files` answers.
    pub list_delay: Duration,
    /// When set, `GET auth-files` answers this status with an error body.
    pub list_failure: Option<u16>,
}

/// Why a management call on credentials failed: HTTP status and CPA's error text.
pub(crate) type Failure = (u16, String);

impl Credentials {
    pub(crate) fn new(files: Vec<AuthFile>) -> Credentials {
        Credentials {
            files,
            ..Credentials::default()
        }
    }

    /// `GET auth-files` with CPA's filters and order.
    pub(crate) fn list(&self, name: &str, auth_index: &str) -> Value {
        let mut files: Vec<&AuthFile> = self
            .files
            .iter()
            .filter(|file| name.is_empty() || file.id == name || file.name == name)
            .filter(|file| auth_index.is_empty() || file.auth_index == auth_index)
            .collect();
        files.sort_by_key(|file| file.name.to_lowercase());
        json!({"files": files.iter().map(|file| file.to_json()).collect::<Vec<_>>()})
    }

    /// CPA's `lookupAuthFile`.
    fn lookup(&mut self, name: &str, auth_index: &str) -> Option<&mut AuthFile> {
        if auth_index.is_empty() {
            let position = self
                .files
                .iter()
                .position(|file| file.id == name)
                .or_else(|| self.files.iter().position(|file| file.name == name))?;
            return self.files.get_mut(position);
        }
        self.files
            .iter_mut()
            .find(|file| (file.id == name || file.name == name) && file.auth_index == auth_index)
    }

    /// `PATCH auth-files/status`.
    pub(crate) fn patch_status(&mut self, body: &[u8]) -> Result<Value, Failure> {
        let invalid = || (400, "invalid request body".to_string());
        let value: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
        let object = value.as_object().ok_or_else(invalid)?;
        let text = |key: &str| -> Result<String, Failure> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(text)) => Ok(text.trim().to_string()),
                Some(_) => Err(invalid()),
            }
        };
        let name = text("name")?;
        let auth_index = text("auth_index")?;
        if name.is_empty() {
            return Err((400, "name is required".to_string()));
        }
        let disabled = match object.get("disabled") {
            None | Some(Value::Null) => return Err((400, "disabled is required".to_string())),
            Some(Value::Bool(disabled)) => *disabled,
            Some(_) => return Err(invalid()),
        };
        let file = self
            .lookup(&name, &auth_index)
            .ok_or_else(|| (404, "auth file not found".to_string()))?;
        file.set_disabled(disabled);
        let change = StatusChange {
            id: file.id.clone(),
            name: file.name.clone(),
            auth_index: file.auth_index.clone(),
            disabled,
        };
        self.status_changes.push(change);
        Ok(json!({"status": "ok", "disabled": disabled}))
    }

    /// `DELETE auth-files?name=…` (several `name`s allowed) or `?all=true`.
    pub(crate) fn delete(&mut self, names: &[String], all: bool) -> Result<Value, Failure> {
        if all {
            let deleted = self.files.len();
            self.deleted
                .extend(self.files.drain(..).map(|file| file.name));
            return Ok(json!({"status": "ok", "deleted": deleted}));
        }
        if names.is_empty() {
            return Err((400, "invalid name".to_string()));
        }
        let mut deleted = Vec::new();
        let mut failed = Vec::new();
        for name in names {
            let before = self.files.len();
            let physical = self
                .files
                .iter()
                .find(|file| file.id == *name || file.name == *name)
                .map(|file| file.name.clone());
            match physical {
                Some(physical) => {
                    self.files.retain(|file| file.name != physical);
                    if self.files.len() < before {
                        self.deleted.push(physical.clone());
                        deleted.push(physical);
                    }
                }
                None => failed.push(json!({"name": name, "error": "auth file not found"})),
            }
        }
        match (names.len(), failed.is_empty()) {
            (1, true) => Ok(json!({"status": "ok"})),
            (1, false) => Err((404, "auth file not found".to_string())),
            (_, true) => Ok(json!({"status": "ok", "deleted": deleted.len(), "files": deleted})),
            (_, false) => Ok(json!({
                "status": "partial",
                "deleted": deleted.len(),
                "files": deleted,
                "failed": failed,
            })),
        }
    }

    /// `POST api-call`: the upstream answer to send (after its delay), or CPA's own error.
    pub(crate) fn api_call(&mut self, body: &[u8]) -> Result<ApiCallAnswer, Failure> {
        let invalid = || (400, "invalid body".to_string());
        let value: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
        let object = value.as_object().ok_or_else(invalid)?;
        let auth_index = ["auth_index", "authIndex", "AuthIndex"]
            .iter()
            .find_map(|key| object.get(*key).and_then(Value::as_str))
            .unwrap_or_default()
            .trim()
            .to_string();
        let method = object
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_ascii_uppercase();
        if method.is_empty() {
            return Err((400, "missing method".to_string()));
        }
        let url = object
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        if url.is_empty() {
            return Err((400, "missing url".to_string()));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err((400, "invalid url".to_string()));
        }
        let known = self
            .files
            .iter()
            .any(|file| !auth_index.is_empty() && file.auth_index == auth_index);
        let mut header = Vec::new();
        if let Some(map) = object.get("header").and_then(Value::as_object) {
            for (key, value) in map {
                let text = value.as_str().unwrap_or_default();
                let text = if known {
                    text.replace("$TOKEN$", &format!("fake-access-token-{auth_index}"))
                } else {
                    text.to_string()
                };
                header.push((key.clone(), text));
            }
        }
        let data = object
            .get("data")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.api_calls.push(ApiCallRecord {
            auth_index: auth_index.clone(),
            method,
            url: url.clone(),
            header,
            data,
        });
        let rule = self.api_rules.iter_mut().find(|rule| {
            (rule.auth_index.is_empty() || rule.auth_index == auth_index)
                && url.contains(&rule.url_contains)
                && rule.times != Some(0)
        });
        match rule {
            Some(rule) => {
                if let Some(times) = rule.times.as_mut() {
                    *times -= 1;
                }
                Ok(rule.answer.clone())
            }
            // Nothing scripted: the upstream cannot be reached from a test.
            None => Err((502, "request failed".to_string())),
        }
    }

    /// The file content for `auth-files/download?name=`.
    pub(crate) fn download(&self, name: &str) -> Result<Value, Failure> {
        self.files
            .iter()
            .find(|file| file.name == name)
            .map(AuthFile::content)
            .ok_or_else(|| (404, "file not found".to_string()))
    }

    pub(crate) fn count_request(&mut self, auth_index: &str, failed: bool) {
        if let Some(file) = self
            .files
            .iter_mut()
            .find(|file| file.auth_index == auth_index)
        {
            if failed {
                file.failed += 1;
            } else {
                file.success += 1;
            }
        }
    }
}

/// The fake's starting credentials: one per file-backed account of the generator.
pub(crate) fn default_files() -> Vec<AuthFile> {
    crate::events::ACCOUNTS
        .iter()
        .filter(|account| !account.file_name.is_empty())
        .map(|account| {
            let mut file = AuthFile::new(
                account.file_name,
                account.auth_index,
                account.provider,
                account.source,
            );
            file.account = Some(account.source.to_string());
            if account.provider == "codex" {
                file.account_type = Some("email".to_string());
                file.chatgpt_account_id = Some(format!("acct-{}", &account.auth_index[..8]));
                file.plan_type = Some("plus".to_string());
            }
            file
        })
        .collect()
}

/// The `api-call` reply body CPA sends for an upstream answer.
pub(crate) fn api_call_reply(answer: &ApiCallAnswer) -> Value {
    let mut header = Map::new();
    for (key, value) in &answer.header {
        header.insert(key.clone(), json!([value]));
    }
    json!({"status_code": answer.status_code, "header": header, "body": answer.body})
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn two_files() -> Credentials {
        let mut expanded = AuthFile::new("gemini-team.json", "aa00", "gemini", "team@example.com");
        expanded.id = "gemini-team.json#project-a".to_string();
        Credentials::new(vec![
            AuthFile::new("codex-b.json", "bb00", "codex", "b@example.com"),
            AuthFile::new("Codex-a.json", "cc00", "codex", "a@example.com"),
            expanded,
        ])
    }

    #[test]
    fn the_list_is_sorted_and_filtered_like_cpa() {
        let credentials = two_files();
        let all = credentials.list("", "");
        let names: Vec<&str> = all["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Codex-a.json", "codex-b.json", "gemini-team.json"]);
        let by_id = credentials.list("gemini-team.json#project-a", "");
        assert_eq!(by_id["files"].as_array().unwrap().len(), 1);
        assert!(
            credentials.list("codex-b.json", "cc00")["files"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn status_changes_follow_cpa() {
        let mut credentials = two_files();
        let answer = credentials
            .patch_status(br#"{"name":"codex-b.json","disabled":true}"#)
            .unwrap();
        assert_eq!(answer, json!({"status": "ok", "disabled": true}));
        assert_eq!(credentials.files[0].status, "disabled");
        assert_eq!(
            credentials.patch_status(br#"{"name":"codex-b.json"}"#),
            Err((400, "disabled is required".to_string()))
        );
        assert_eq!(
            credentials
                .patch_status(br#"{"name":"codex-b.json","auth_index":"zz","disabled":false}"#),
            Err((404, "auth file not found".to_string()))
        );
        assert_eq!(credentials.status_changes.len(), 1);
    }

    #[test]
    fn api_calls_substitute_the_token_and_follow_the_script() {
        let mut credentials = two_files();
        credentials.api_rules.push(ApiCallRule {
            auth_index: "bb00".into(),
            url_contains: "/wham/usage".into(),
            answer: ApiCallAnswer::json(200, &json!({"plan_type": "plus"})),
            times: Some(1),
        });
        let body = br#"{"authIndex":"bb00","method":"get","url":"https://chatgpt.com/backend-api/wham/usage","header":{"Authorization":"Bearer $TOKEN$"}}"#;
        assert_eq!(credentials.api_call(body).unwrap().status_code, 200);
        assert_eq!(
            credentials.api_calls[0].header,
            vec![(
                "Authorization".to_string(),
                "Bearer fake-access-token-bb00".to_string()
            )]
        );
        assert_eq!(credentials.api_calls[0].method, "GET");
        // The rule was used up; an unscripted upstream cannot be reached.
        assert_eq!(
            credentials.api_call(body),
            Err((502, "request failed".to_string()))
        );
    }
}
