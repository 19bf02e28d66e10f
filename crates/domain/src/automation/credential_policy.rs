//! Which authentication failures make a credential an account-action candidate
//! (automation spec §4.3), and what an operator should do about it.
//!
//! The rules read the HTTP status, the error code and type (from the response headers,
//! else the first JSON error object of the failure text) and the failure text. They are
//! tried in order; the first that matches decides.

#![warn(missing_docs)]

use serde_json::Value;

use super::authfile::normalize_provider;
use super::jsonscan::{as_text, json_values};
use crate::event::UsageEvent;

/// What the operator is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The account or workspace is deactivated; review and delete the stale auth file.
    Delete,
    /// The token was revoked, is invalid or expired; log the account in again.
    Reauth,
    /// Unclear; a person should look.
    Review,
}

impl Action {
    /// The action as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Reauth => "reauth",
            Action::Review => "review",
        }
    }
}

/// The verdict on one failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the operator is asked to do.
    pub action: Action,
    /// A stable code of the matched rule.
    pub reason_code: &'static str,
    /// The rule's explanation, for the panel.
    pub reason: &'static str,
    /// `high` or `medium`.
    pub confidence: &'static str,
    /// Whether auto-disable may act on it (when switched on).
    pub auto_disable_eligible: bool,
}

/// What the rules look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureSignal {
    /// The normalised provider.
    pub provider: String,
    /// The upstream HTTP status.
    pub status_code: i64,
    /// The upstream error code, if any.
    pub error_code: String,
    /// The upstream error type, if any.
    pub error_type: String,
    /// The redacted failure summary.
    pub summary: String,
    /// The upstream's `X-Should-Retry` header, when present.
    pub should_retry: Option<bool>,
}

impl FailureSignal {
    /// The signal of a failed event: provider snapshot (else provider), status, the
    /// header error code/kind when either is set (else the first JSON error object in the
    /// failure text), the failure text and `X-Should-Retry`.
    pub fn of(event: &UsageEvent) -> FailureSignal {
        let provider = event
            .auth_provider_snapshot
            .as_deref()
            .filter(|provider| !provider.trim().is_empty())
            .or(event.provider.as_deref())
            .unwrap_or("")
            .to_string();
        let summary = event.fail_summary.clone().unwrap_or_default();
        let header_code = event.header_error_code.clone().unwrap_or_default();
        let header_kind = event.header_error_kind.clone().unwrap_or_default();
        let (error_code, error_type) = if !header_code.is_empty() || !header_kind.is_empty() {
            (header_code, header_kind)
        } else {
            body_error(&summary)
        };
        let should_retry = event
            .response_metadata_json
            .as_deref()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|metadata| {
                metadata
                    .pointer("/errors/should_retry")
                    .and_then(Value::as_bool)
            });
        FailureSignal {
            provider,
            status_code: event.fail_status_code.unwrap_or(0),
            error_code,
            error_type,
            summary,
            should_retry,
        }
    }
}

/// The first JSON object with an error code or type (an `error` child wins).
fn body_error(text: &str) -> (String, String) {
    let read = |object: &serde_json::Map<String, Value>| {
        let code = ["code", "error_code", "errorCode"]
            .iter()
            .find_map(|key| object.get(*key).and_then(as_text))
            .unwrap_or_default();
        let kind = ["type", "error_type", "errorType"]
            .iter()
            .find_map(|key| object.get(*key).and_then(as_text))
            .unwrap_or_default();
        (code, kind)
    };
    for value in json_values(text) {
        let Some(object) = value.as_object() else {
            continue;
        };
        let (mut code, mut kind) = read(object);
        if let Some(error) = object.get("error").and_then(Value::as_object) {
            let (inner_code, inner_kind) = read(error);
            if !inner_code.is_empty() {
                code = inner_code;
            }
            if !inner_kind.is_empty() {
                kind = inner_kind;
            }
        }
        if !code.is_empty() || !kind.is_empty() {
            return (code, kind);
        }
    }
    (String::new(), String::new())
}

fn token(text: &str) -> String {
    text.trim().to_ascii_lowercase().replace('-', "_")
}

fn contains_any(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|needle| text.contains(needle))
}

/// The decision for a failure, if it is one the queue tracks.
pub fn evaluate(signal: &FailureSignal) -> Option<Decision> {
    let provider = normalize_provider(&signal.provider);
    let code = token(&signal.error_code);
    let kind = token(&signal.error_type);
    let text = format!("{}\n{code}\n{kind}", signal.summary).to_lowercase();
    let decision = |action, reason_code, reason, confidence, eligible| Decision {
        action,
        reason_code,
        reason,
        confidence,
        auto_disable_eligible: eligible,
    };
    if signal.status_code == 402 && text.contains("deactivated_workspace") {
        return Some(decision(
            Action::Delete,
            "workspace_deactivated",
            "Workspace is deactivated; review and delete the stale auth file if appropriate",
            "high",
            true,
        ));
    }
    if signal.status_code != 401 && signal.status_code != 403 {
        return None;
    }
    if text.contains("account_deactivated") {
        return Some(decision(
            Action::Delete,
            "account_deactivated",
            "Account is deactivated; review and delete the stale auth file if appropriate",
            "high",
            true,
        ));
    }
    if contains_any(
        &text,
        &[
            "token_revoked",
            "token_invalidated",
            "invalidated_oauth_token",
            "invalidated oauth token",
            "oauth token revoked",
            "authentication token has been invalidated",
            "token has been invalidated",
        ],
    ) {
        return Some(decision(
            Action::Reauth,
            "token_revoked",
            "OAuth token was revoked or invalidated; reauthorize the account",
            "high",
            true,
        ));
    }
    if contains_any(
        &text,
        &[
            "invalid_token",
            "invalid or expired credentials",
            "provided authentication token is expired",
            "authentication token is expired",
            "token is expired",
            "no auth context",
            "invalid_grant",
            "auth_unavailable",
            "requires reauthorization",
            "requires re-authentication",
        ],
    ) {
        return Some(decision(
            Action::Reauth,
            "invalid_credentials",
            "Credentials are invalid or expired; reauthorize the account",
            "high",
            true,
        ));
    }
    if provider == "xai"
        && code == "permission_denied"
        && text.contains("access to the chat endpoint is denied")
        && contains_any(
            &text,
            &[
                "correct credentials",
                "update the permissions",
                "contact support",
            ],
        )
        && signal.should_retry != Some(true)
    {
        return Some(decision(
            Action::Review,
            "credential_permission_denied",
            "xAI rejected this credential for the chat endpoint; review credential permissions",
            "high",
            true,
        ));
    }
    if kind == "authentication_error"
        || contains_any(
            &text,
            &[
                "authentication_error",
                "unauthorized",
                "forbidden",
                "permission_denied",
            ],
        )
    {
        return Some(decision(
            Action::Review,
            "authentication_review",
            "Authentication failure requires manual review",
            "medium",
            false,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: i64, summary: &str, expected: Option<(&str, bool)>) {
        let signal = FailureSignal {
            provider: "codex".into(),
            status_code: status,
            summary: summary.into(),
            ..FailureSignal::default()
        };
        let got = evaluate(&signal)
            .map(|decision| (decision.reason_code, decision.auto_disable_eligible));
        assert_eq!(got, expected, "{status} {summary}");
    }

    #[test]
    fn rules_apply_in_order() {
        check(
            402,
            r#"{"detail":{"code":"deactivated_workspace"}}"#,
            Some(("workspace_deactivated", true)),
        );
        check(
            401,
            r#"{"error":{"code":"account_deactivated"}}"#,
            Some(("account_deactivated", true)),
        );
        check(
            401,
            r#"{"error":{"code":"token_revoked","message":"Encountered invalidated oauth token"}}"#,
            Some(("token_revoked", true)),
        );
        check(
            401,
            "Provided authentication token is expired. Please try signing in again.",
            Some(("invalid_credentials", true)),
        );
        check(
            403,
            r#"{"error":{"type":"permission_error","message":"Forbidden"}}"#,
            Some(("authentication_review", false)),
        );
        check(429, r#"{"error":{"code":"token_revoked"}}"#, None);
        check(401, "upstream timeout", None);
    }

    #[test]
    fn error_codes_come_from_headers_or_the_body() {
        let event = UsageEvent {
            failed: true,
            fail_status_code: Some(403),
            provider: Some("xai".into()),
            fail_summary: Some(
                r#"{"code":"permission-denied","error":"Access to the chat endpoint is denied. Please make sure you have the correct credentials"}"#.into(),
            ),
            ..UsageEvent::default()
        };
        let signal = FailureSignal::of(&event);
        assert_eq!(signal.error_code, "permission-denied");
        let decision = evaluate(&signal).expect("decision");
        assert_eq!(decision.reason_code, "credential_permission_denied");
        assert_eq!(decision.action, Action::Review);

        let retried = UsageEvent {
            response_metadata_json: Some(r#"{"errors":{"should_retry":true}}"#.into()),
            ..event
        };
        assert_eq!(
            evaluate(&FailureSignal::of(&retried)).map(|decision| decision.reason_code),
            Some("authentication_review"),
            "a retryable denial is only worth a review"
        );
    }
}
