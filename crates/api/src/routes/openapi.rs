//! The API reference: an OpenAPI 3.1 document built from [`OPERATIONS`] and the
//! route-ownership table, served at `GET /openapi.json` (public: it describes paths,
//! never data).
//!
//! Kept true by tests: every path the ownership table owns is documented (a pending one
//! as "501 until available", generated from the table), every documented path is owned
//! (or is one of CPA's pass-through paths), every route path registered in
//! `routes/*.rs` is documented, and the black-box test `openapi` sends every documented
//! operation to the real server and fails when one is not registered.
//! Adding a route: add its row to [`OPERATIONS`].

use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};

use super::owned::{OWNED_ROUTES, RouteState};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The CPAMP Admin Key (`Authorization: Bearer …`).
    Admin,
    /// No credential.
    Public,
    /// The caller's own CPA API Key, passed through to CPA unchanged.
    CpaApiKey,
}

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// Lower-case HTTP method.
    pub method: &'static str,
    /// The path, with `{name}` for a path parameter.
    pub path: &'static str,
    /// Which credential the operation needs.
    pub access: Access,
    /// Groups operations in the reference.
    pub tag: &'static str,
    /// One line saying what the operation does.
    pub summary: &'static str,
}

const fn op(
    method: &'static str,
    path: &'static str,
    access: Access,
    tag: &'static str,
    summary: &'static str,
) -> Operation {
    Operation {
        method,
        path,
        access,
        tag,
        summary,
    }
}

use Access::{Admin, CpaApiKey, Public};

/// Every operation cpamp serves itself, plus CPA's pass-through model lists.
pub const OPERATIONS: &[Operation] = &[
    op(
        "get",
        "/health",
        Public,
        "service",
        "Liveness: `{\"ok\":true,\"service\":\"cpa-manager-plus\"}`",
    ),
    op(
        "get",
        "/openapi.json",
        Public,
        "service",
        "This API reference (OpenAPI 3.1)",
    ),
    op(
        "get",
        "/management.html",
        Public,
        "service",
        "The web panel",
    ),
    op(
        "get",
        "/",
        Public,
        "service",
        "Redirects to /management.html",
    ),
    op(
        "get",
        "/status",
        Admin,
        "service",
        "Collector state, counts, database files, gaps and the doctor's diagnosis",
    ),
    op(
        "get",
        "/metrics",
        Admin,
        "service",
        "Prometheus metrics (the admin key or METRICS_TOKEN)",
    ),
    op(
        "get",
        "/usage-service/info",
        Public,
        "setup",
        "Whether setup is needed and why; no secrets",
    ),
    op(
        "post",
        "/setup",
        Public,
        "setup",
        "First setup: check the CPA URL and CPA Management Key on CPA and save them (the admin key once a credential exists)",
    ),
    op(
        "get",
        "/usage-service/config",
        Admin,
        "setup",
        "The saved CPA connection and collector settings; the CPA Management Key only masked",
    ),
    op(
        "put",
        "/usage-service/config",
        Admin,
        "setup",
        "Change the CPA connection or collector settings",
    ),
    op(
        "get",
        "/usage-service/account-processing-policy",
        Admin,
        "automation",
        "The three account automation switches with their source and environment locks (open before setup)",
    ),
    op(
        "patch",
        "/usage-service/account-processing-policy",
        Admin,
        "automation",
        "Change switches not locked by their environment variable (409 account_processing_policy_env_locked)",
    ),
    op(
        "get",
        "/usage-service/quota-cooldowns",
        Admin,
        "automation",
        "Accounts disabled until their quota resets, soonest first",
    ),
    op(
        "get",
        "/usage-service/automation-audit",
        Admin,
        "automation",
        "The audit log of account changes (actor, action, reason, outcome, CPA's answer), newest first",
    ),
    op(
        "get",
        "/v0/management/account-action-candidates",
        Admin,
        "automation",
        "Accounts whose authentication failures need a person (status, limit ≤ 500)",
    ),
    op(
        "post",
        "/v0/management/account-action-candidates/{id}/ignore",
        Admin,
        "automation",
        "Ignore a pending candidate",
    ),
    op(
        "post",
        "/v0/management/account-action-candidates/{id}/resolve",
        Admin,
        "automation",
        "Mark a pending candidate resolved",
    ),
    op(
        "post",
        "/v0/management/account-action-candidates/{id}/enable",
        Admin,
        "automation",
        "Enable the candidate's account in CPA and resolve it",
    ),
    op(
        "delete",
        "/v0/management/account-action-candidates/{id}/auth-file",
        Admin,
        "automation",
        "Delete the candidate's auth file in CPA (a file holding one credential) and mark it deleted",
    ),
    op(
        "post",
        "/v0/management/codex-inspection/run",
        Admin,
        "automation",
        "Start a server inspection now (409 while one runs); answers the run as started",
    ),
    op(
        "get",
        "/v0/management/codex-inspection/runs",
        Admin,
        "automation",
        "Inspection history, newest first (limit ≤ 200)",
    ),
    op(
        "get",
        "/v0/management/codex-inspection/runs/{id}",
        Admin,
        "automation",
        "One run with its per-account results and log",
    ),
    op(
        "post",
        "/v0/management/codex-inspection/runs/{id}/cancel",
        Admin,
        "automation",
        "Cancel a running inspection",
    ),
    op(
        "post",
        "/v0/management/codex-inspection/runs/{id}/actions",
        Admin,
        "automation",
        "Execute the suggested actions of selected results of a completed run",
    ),
    op(
        "get",
        "/v0/resource/plugins/{path}",
        Public,
        "cpa",
        "A CPA plugin's page, asset or API (any method CPA accepts): forwarded to CPA with the CPA Management Key for an admin, else with the caller's own credential; a plugin's `management_origin` and `X-Codex-Invite-Origin` are set to CPA's origin",
    ),
    op(
        "post",
        "/v0/management/quota-snapshots",
        Admin,
        "automation",
        "Record observations of accounts' quota windows (idempotent per observation)",
    ),
    op(
        "post",
        "/v0/management/quota-snapshots/query",
        Admin,
        "automation",
        "Each account's current quota windows, with availability and cycles",
    ),
    op(
        "get",
        "/v0/management/usage",
        Admin,
        "analytics",
        "The compatible usage payload of the Go server (at most USAGE_QUERY_LIMIT events)",
    ),
    op(
        "get",
        "/v0/management/usage/export",
        Admin,
        "transfer",
        "Every stored event as NDJSON (or CSV), oldest first, from one snapshot; filters from_ms, to_ms, model, api_key_hash, limit, format",
    ),
    op(
        "post",
        "/v0/management/usage/import",
        Admin,
        "transfer",
        "Import an export (ours or the Go server's), CPA records, a JSON array or a legacy snapshot (at most 64 MiB); events dedupe by hash",
    ),
    op(
        "post",
        "/v0/management/usage/import-sessions",
        Admin,
        "transfer",
        "Start (or resume, with resume_key) a chunked import of a large file",
    ),
    op(
        "get",
        "/v0/management/usage/import-sessions/{id}",
        Admin,
        "transfer",
        "An import session's state and, once processed, its result",
    ),
    op(
        "delete",
        "/v0/management/usage/import-sessions/{id}",
        Admin,
        "transfer",
        "Cancel an import session (202 while its import is stopping)",
    ),
    op(
        "put",
        "/v0/management/usage/import-sessions/{id}/chunk",
        Admin,
        "transfer",
        "Upload the next chunk at ?offset=received_bytes",
    ),
    op(
        "post",
        "/v0/management/usage/import-sessions/{id}/complete",
        Admin,
        "transfer",
        "Import the uploaded file in the background (202 processing)",
    ),
    op(
        "get",
        "/usage-service/backups",
        Admin,
        "transfer",
        "The backups in the data directory, newest first",
    ),
    op(
        "post",
        "/usage-service/backups",
        Admin,
        "transfer",
        "Write a consistent backup (database copy, data.key, manifest) while collecting goes on",
    ),
    op(
        "get",
        "/usage-service/backups/{name}",
        Admin,
        "transfer",
        "A backup's manifest, after checking every file's checksum",
    ),
    op(
        "delete",
        "/usage-service/backups/{name}",
        Admin,
        "transfer",
        "Delete a backup",
    ),
    op(
        "get",
        "/usage-service/backups/{name}/{file}",
        Admin,
        "transfer",
        "Download usage.sqlite, data.key or manifest.json of a backup",
    ),
    op(
        "get",
        "/v0/management/dashboard/summary",
        Admin,
        "analytics",
        "Dashboard totals, series and breakdowns for a time range",
    ),
    op(
        "post",
        "/v0/management/monitoring/analytics",
        Admin,
        "analytics",
        "Request monitoring: sections, filters and event pages",
    ),
    op(
        "get",
        "/v0/management/monitoring/header-snapshots",
        Admin,
        "analytics",
        "Recent response-header snapshots (rate-limit headers) per account",
    ),
    op(
        "post",
        "/v0/management/monitoring/account-history",
        Admin,
        "analytics",
        "Per-account usage history",
    ),
    op(
        "post",
        "/v0/management/monitoring/account-window-usage",
        Admin,
        "analytics",
        "Per-account usage inside quota windows",
    ),
    op(
        "get",
        "/v0/management/model-prices",
        Admin,
        "prices",
        "The price table: USD per 1M tokens per model, with context and service tiers",
    ),
    op(
        "put",
        "/v0/management/model-prices",
        Admin,
        "prices",
        "Replace the whole price table (manual prices are pinned: no sync changes them)",
    ),
    op(
        "get",
        "/v0/management/model-prices/usage-summary",
        Admin,
        "prices",
        "Calls per model over all stored events, from the rollups",
    ),
    op(
        "post",
        "/v0/management/model-prices/sync",
        Admin,
        "prices",
        "Fetch prices from models.dev, LiteLLM and OpenRouter; save unique strong matches only",
    ),
    op(
        "get",
        "/v0/management/model-prices/explain",
        Admin,
        "prices",
        "How one request's cost was computed (?event_hash=): price, rule, tier, each token class",
    ),
    op(
        "get",
        "/v0/management/api-key-aliases",
        Admin,
        "prices",
        "Names of client API keys, by the SHA-256 of the key",
    ),
    op(
        "put",
        "/v0/management/api-key-aliases",
        Admin,
        "prices",
        "Add or rename aliases (unique ignoring case)",
    ),
    op(
        "delete",
        "/v0/management/api-key-aliases/{hash}",
        Admin,
        "prices",
        "Remove the alias of a key hash",
    ),
    op(
        "get",
        "/v0/management/collector-gaps",
        Admin,
        "service",
        "Periods in which the collector received nothing, with their cause",
    ),
    op(
        "get",
        "/v1/models",
        CpaApiKey,
        "cpa",
        "CPA's model list, forwarded with the caller's CPA API Key",
    ),
    op(
        "get",
        "/models",
        CpaApiKey,
        "cpa",
        "CPA's model list, forwarded with the caller's CPA API Key",
    ),
];

/// Documented paths that the ownership table does not list: the root redirect and
/// CPA's pass-through model lists.
pub const UNOWNED_PATHS: &[&str] = &["/", "/v1/models", "/models", "/v0/resource/plugins/{path}"];

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.service(web::resource("/openapi.json").route(web::get().to(openapi)));
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let entry = paths
            .entry(operation.path.to_string())
            .or_insert_with(|| json!({}));
        entry[operation.method] = operation_value(operation);
    }
    for route in OWNED_ROUTES {
        let documented = OPERATIONS
            .iter()
            .any(|operation| route.covers(operation.path));
        if route.state == RouteState::Pending && !documented {
            paths.insert(
                route.path.to_string(),
                json!({
                    "summary": format!("{} (not in this version)", route.feature),
                    "description": "Owned by cpamp and never forwarded to CPA. Every method answers 501 \
                                    `not_implemented` until the feature is available.",
                    "x-cpamp-state": "pending",
                    "get": {
                        "tags": ["pending"],
                        "summary": format!("{}: answers 501 not_implemented", route.feature),
                        "responses": {
                            "501": {"$ref": "#/components/responses/Error"}
                        }
                    }
                }),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cpamp Manager Server API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of cpamp, the Manager Server for CPA. Paths, shapes and error codes \
                            match CPA Manager Plus. Every error is `{\"error\": message, \"code\": code}`. Other \
                            `/v0/management/*` paths belong to CPA: cpamp forwards them after checking the \
                            CPAMP Admin Key, with the saved CPA Management Key in its place.",
            "license": {"name": "MIT", "identifier": "MIT"}
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "service", "description": "Health, status, metrics and this reference"},
            {"name": "setup", "description": "The CPA connection"},
            {"name": "analytics", "description": "Stored usage: dashboards, monitoring, the compatible usage payload"},
            {"name": "transfer", "description": "Usage export and import, import sessions, backups"},
            {"name": "automation", "description": "Account automation: quota cooldowns, the account action queue, its policy and the audit log"},
            {"name": "cpa", "description": "CPA paths cpamp forwards with the caller's own credential"},
            {"name": "pending", "description": "Owned by cpamp, not in this version yet"}
        ],
        "components": {
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer", "description": "The CPAMP Admin Key"},
                "cpaApiKey": {"type": "http", "scheme": "bearer", "description": "A CPA API Key, passed to CPA unchanged"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "code"],
                    "properties": {
                        "error": {"type": "string", "description": "What went wrong and how to fix it"},
                        "code": {"type": "string", "description": "Stable code the panel switches on"}
                    }
                }
            },
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            }
        },
        "paths": paths
    })
}

fn operation_value(operation: &Operation) -> Value {
    let security = match operation.access {
        Admin => json!([{"adminKey": []}]),
        Public => json!([]),
        CpaApiKey => json!([{"cpaApiKey": []}]),
    };
    json!({
        "tags": [operation.tag],
        "summary": operation.summary,
        "operationId": format!(
            "{}{}",
            operation.method,
            operation.path.replace(['/', '-', '.', '{', '}'], "_")
        ),
        "security": security,
        "responses": {
            "200": {"description": "Success"},
            "default": {"$ref": "#/components/responses/Error"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::owned::owner_of;

    #[test]
    fn every_owned_path_is_documented() {
        let document = document();
        let paths = document["paths"].as_object().expect("paths");
        for route in OWNED_ROUTES {
            let documented = paths.keys().any(|path| route.covers(path));
            assert!(
                documented,
                "{} is owned but missing from OPERATIONS in routes/openapi.rs",
                route.path
            );
            if route.state == RouteState::Served {
                assert!(
                    OPERATIONS
                        .iter()
                        .any(|operation| route.covers(operation.path)),
                    "{} is served: document its operations in OPERATIONS",
                    route.path
                );
            }
        }
    }

    #[test]
    fn every_documented_path_is_owned_or_a_cpa_pass_through() {
        for operation in OPERATIONS {
            assert!(
                owner_of(operation.path).is_some() || UNOWNED_PATHS.contains(&operation.path),
                "{} is documented but not in the ownership table (routes/owned.rs)",
                operation.path
            );
        }
    }

    /// Route paths registered in `routes/*.rs`: literals passed to `resource(`,
    /// `register(` or `scope(`, and literals standing alone as array items.
    fn registered_paths() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .expect("routes dir")
            .filter_map(Result::ok)
        {
            let path = entry.path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            if !name.ends_with(".rs") || name == "owned.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
            for line in code.lines().map(str::trim) {
                let pieces: Vec<&str> = line.split('"').collect();
                for index in (1..pieces.len()).step_by(2) {
                    let literal = pieces[index];
                    let before = pieces[index - 1];
                    let call = ["resource(", "register(", "scope("]
                        .iter()
                        .any(|call| before.ends_with(call));
                    let array_item = index == 1
                        && before.is_empty()
                        && pieces
                            .get(index + 1)
                            .is_some_and(|after| after.trim() == ",");
                    if literal.starts_with('/') && (call || array_item) {
                        let trimmed = literal.trim_end_matches('/');
                        found.push(if trimmed.is_empty() {
                            "/".to_string()
                        } else {
                            trimmed.to_string()
                        });
                    }
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }

    #[test]
    fn every_registered_route_is_documented() {
        let registered = registered_paths();
        assert!(
            registered.contains(&"/v0/management/dashboard/summary".to_string())
                && registered.contains(&"/health".to_string()),
            "the scan finds no routes: {registered:?}"
        );
        for path in registered {
            assert!(
                OPERATIONS.iter().any(|operation| operation.path == path),
                "{path} is registered in crates/api/src/routes but missing from OPERATIONS in routes/openapi.rs"
            );
        }
    }

    #[test]
    fn the_document_is_openapi_with_unique_operation_ids() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let mut ids = Vec::new();
        for item in document["paths"].as_object().expect("paths").values() {
            for (method, operation) in item.as_object().expect("path item") {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str())
                    && let Some(id) = operation["operationId"].as_str()
                {
                    assert!(!ids.contains(&id.to_string()), "duplicate operationId {id}");
                    ids.push(id.to_string());
                }
            }
        }
        assert!(ids.len() >= OPERATIONS.len());
    }
}
