//! Model prices, cost and API key aliases through the real binary: the API shapes of
//! analytics.md §5–6, costs in every answer from the current prices, sync from local
//! stand-ins of models.dev, LiteLLM and OpenRouter, offline import, and adoption of a
//! Go database's prices and aliases.

mod sources;

use cpamp_domain::event::UsageEvent;
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch};
use cpamp_domain::prices::aliases::hash_api_key;
use serde_json::{Value, json};

use crate::support::{ServerProcess, client, command};
use sources::{ConnectProxy, SourceServer};

const ADMIN_KEY: &str = "cpamp-prices-test-admin-key-0123456789abc";
const RAW_CLIENT_KEY: &str = "sk-prices-test-client-key-do-not-store-0001";
const DAY: &str = "today_start_ms=1735689600000&now_ms=1735696800000";

/// The analytics spec's worked example (a priced success and a failure without
/// tokens), with a real client-key hash and an auth file, plus one request whose
/// resolved model has no price.
fn events() -> Vec<UsageEvent> {
    let mut events = crate::analytics::worked_example();
    for event in &mut events {
        event.api_key_hash = Some(hash_api_key(RAW_CLIENT_KEY));
        event.auth_file_snapshot = Some("codex-a.json".into());
        event.auth_provider_snapshot = Some("codex".into());
    }
    let unpriced = UsageEvent {
        event_hash: "33".repeat(32),
        request_id: Some("req-3".into()),
        timestamp_ms: 1_735_695_600_000,
        timestamp: "2025-01-01T01:40:00Z".into(),
        model: "mystery-alias".into(),
        requested_model: Some("mystery-alias".into()),
        resolved_model: Some("mystery-model-2025".into()),
        created_at_ms: 1_735_695_600_500,
        ..events[0].clone()
    };
    events.push(unpriced);
    events
}

fn seed(data: &std::path::Path, events: Vec<UsageEvent>) {
    let db = data.join("usage.sqlite");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = cpamp_storage::SqliteStore::open(cpamp_storage::Options::new(&db))
            .await
            .expect("open");
        store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://cpa".into()),
                events,
                dead_letters: Vec::new(),
            })
            .await
            .expect("seed");
        store.close().await;
    });
}

fn start(data: &std::path::Path, extra: &[(&str, &str)]) -> ServerProcess {
    let mut env = vec![("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)];
    env.extend_from_slice(extra);
    ServerProcess::start(data, &env)
}

fn call(server: &ServerProcess, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut request = client()
        .request(method.parse().expect("method"), server.url(path))
        .bearer_auth(ADMIN_KEY);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().expect("request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn gpt5_price(prompt: f64) -> String {
    json!({"prices": {"gpt-5": {
        "prompt": prompt, "completion": 10, "cache": 0.125, "cacheRead": 0.125,
        "promptConfigured": true, "completionConfigured": true, "cacheReadConfigured": true,
        "source": "manual"
    }}})
    .to_string()
}

#[test]
fn prices_api_shapes_and_costs_in_every_answer() {
    let data = tempfile::tempdir().expect("tempdir");
    seed(data.path(), events());
    let server = start(data.path(), &[]);

    assert_eq!(
        call(&server, "GET", "/v0/management/model-prices", None),
        (200, json!({"prices": {}}))
    );
    let (status, body) = call(
        &server,
        "PUT",
        "/v0/management/model-prices",
        Some("{\"prices\":null}"),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("prices_required")),
        "{body}"
    );
    let (status, body) = call(
        &server,
        "PUT",
        "/v0/management/model-prices",
        Some(r#"{"prices":{"bad-model":{"prompt":-1}}}"#),
    );
    assert_eq!(status, 400);
    assert_eq!(body["code"], "request_failed");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|message| message.contains("bad-model")),
        "{body}"
    );

    // Before any price: every cost is unknown and the answers name the models.
    let (_, dashboard) = call(
        &server,
        "GET",
        &format!("/v0/management/dashboard/summary?{DAY}"),
        None,
    );
    assert_eq!(dashboard["today"]["total_cost"], Value::Null);
    assert_eq!(
        dashboard["unpriced_models"],
        json!(["gpt-5", "mystery-model-2025"])
    );

    let (status, saved) = call(
        &server,
        "PUT",
        "/v0/management/model-prices/",
        Some(&gpt5_price(1.25)),
    );
    assert_eq!(status, 200, "{saved}");
    let price = &saved["prices"]["gpt-5"];
    assert!(price["updatedAtMs"].as_i64().is_some_and(|ms| ms > 0));
    let mut shape = price.clone();
    shape.as_object_mut().expect("object").remove("updatedAtMs");
    assert_eq!(
        shape,
        json!({"prompt":1.25,"completion":10.0,"cache":0.125,"cacheRead":0.125,"promptConfigured":true,
               "completionConfigured":true,"cacheReadConfigured":true,"source":"manual","pinned":true})
    );
    assert_eq!(
        call(&server, "GET", "/v0/management/model-prices", None).1,
        saved
    );

    // Dashboard: gpt-5 costs (600·1.25 + 400·0.125 + 200·10) / 1e6; the day's total
    // stays unknown because mystery-model-2025 has no price, and says so.
    let (_, dashboard) = call(
        &server,
        "GET",
        &format!("/v0/management/dashboard/summary?{DAY}"),
        None,
    );
    assert_eq!(dashboard["top_models_today"][0]["model"], "gpt-5");
    assert_eq!(dashboard["top_models_today"][0]["cost"], 0.0028);
    assert_eq!(dashboard["today"]["total_cost"], Value::Null);
    assert_eq!(dashboard["unpriced_models"], json!(["mystery-model-2025"]));

    // Monitoring: the same numbers per model.
    let monitoring_body = r#"{"from_ms":1735689600000,"to_ms":1735776000000,"time_zone":"UTC",
        "include":{"summary":true,"model_stats":true,"api_key_stats":true}}"#;
    let (status, monitoring) = call(
        &server,
        "POST",
        "/v0/management/monitoring/analytics",
        Some(monitoring_body),
    );
    assert_eq!(status, 200, "{monitoring}");
    let stats = monitoring["model_stats"].as_array().expect("model stats");
    let cost_of = |model: &str| {
        stats
            .iter()
            .find(|row| row["model"] == model)
            .map(|row| row["cost"].clone())
            .expect("model row")
    };
    assert_eq!(cost_of("gpt-5"), 0.0028);
    assert_eq!(cost_of("mystery-alias"), Value::Null);
    assert_eq!(monitoring["unpriced_models"], json!(["mystery-model-2025"]));

    // A client key's alias shows wherever its hash does.
    let hash = hash_api_key(RAW_CLIENT_KEY);
    let alias = json!({"items": [{"apiKeyHash": hash, "alias": "CI bot"}]});
    assert_eq!(
        call(
            &server,
            "PUT",
            "/v0/management/api-key-aliases",
            Some(&alias.to_string())
        )
        .0,
        200
    );
    let (_, monitoring) = call(
        &server,
        "POST",
        "/v0/management/monitoring/analytics",
        Some(monitoring_body),
    );
    assert_eq!(
        monitoring["api_key_stats"][0]["api_key_hash"],
        hash.as_str()
    );
    assert_eq!(monitoring["api_key_stats"][0]["api_key_alias"], "CI bot");
    let (_, dashboard) = call(
        &server,
        "GET",
        &format!("/v0/management/dashboard/summary?{DAY}"),
        None,
    );
    assert_eq!(dashboard["recent_failures"][0]["api_key_alias"], "CI bot");

    // A price under the client's alias name prices the request too.
    let both = json!({"prices": {
        "gpt-5": {"prompt": 1.25, "completion": 10, "cache": 0.125, "cacheRead": 0.125, "source": "manual"},
        "mystery-alias": {"prompt": 1, "completion": 1, "source": "manual"}
    }});
    let (status, _) = call(
        &server,
        "PUT",
        "/v0/management/model-prices",
        Some(&both.to_string()),
    );
    assert_eq!(status, 200);
    let (_, dashboard) = call(
        &server,
        "GET",
        &format!("/v0/management/dashboard/summary?{DAY}"),
        None,
    );
    // mystery: (600·1 + 400·0 + 200·1) / 1e6 = 0.0008 (cache 0: C is free).
    let total = dashboard["today"]["total_cost"]
        .as_f64()
        .expect("known total");
    assert!((total - 0.0036).abs() < 1e-12, "{total}");
    assert!(dashboard.get("unpriced_models").is_none(), "{dashboard}");

    // A price change re-prices history at once: (600·2.5 + 400·0.125 + 200·10) / 1e6.
    let (status, _) = call(
        &server,
        "PUT",
        "/v0/management/model-prices",
        Some(&gpt5_price(2.5)),
    );
    assert_eq!(status, 200);
    let (_, dashboard) = call(
        &server,
        "GET",
        &format!("/v0/management/dashboard/summary?{DAY}"),
        None,
    );
    assert_eq!(dashboard["top_models_today"][0]["cost"], 0.00355);

    // Account history carries the same cost, from the identity rollups.
    let (status, history) = call(
        &server,
        "POST",
        "/v0/management/monitoring/account-history",
        Some(
            r#"{"accounts":[{"row_key":"a","auth_file_snapshot":"codex-a.json","auth_provider_snapshot":"codex","auth_index":"a1"}]}"#,
        ),
    );
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["items"][0]["total_cost"], Value::Null);
    assert_eq!(history["unpriced_models"], json!(["mystery-model-2025"]));

    // Explain one request.
    let (status, explained) = call(
        &server,
        "GET",
        &format!(
            "/v0/management/model-prices/explain?event_hash={}",
            "11".repeat(32)
        ),
        None,
    );
    assert_eq!(status, 200, "{explained}");
    assert_eq!(explained["cost"], 0.00355);
    assert_eq!(explained["analytics_model"], "gpt-5");
    assert_eq!(explained["price"]["key"], "gpt-5");
    assert_eq!(explained["price"]["matched_by"], "billing_model");
    assert_eq!(explained["price"]["rule"], "base");
    assert_eq!(explained["tokens"]["prompt"], 600);
    assert_eq!(
        explained["price"]["lines"][0],
        json!({"class":"prompt","tokens":600,"rate":2.5,"multiplier":1.0,"cost":0.0015})
    );
    let (status, explained) = call(
        &server,
        "GET",
        &format!(
            "/v0/management/model-prices/explain?event_hash={}",
            "33".repeat(32)
        ),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(explained["cost"], Value::Null);
    assert!(
        explained["unpriced_reason"]
            .as_str()
            .is_some_and(|text| text.contains("mystery-model-2025"))
    );
    assert_eq!(
        call(
            &server,
            "GET",
            &format!(
                "/v0/management/model-prices/explain?event_hash={}",
                "44".repeat(32)
            ),
            None
        )
        .0,
        404
    );
    assert_eq!(
        call(
            &server,
            "GET",
            "/v0/management/model-prices/explain?event_hash=xyz",
            None
        )
        .0,
        400
    );

    // Usage summary: model-level counts from the rollups.
    let (status, summary) = call(
        &server,
        "GET",
        "/v0/management/model-prices/usage-summary",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        summary,
        json!({"sampled_events":3,"total_events":3,"truncated":false,"models":[
            {"model":"gpt-5","calls":2,"requested_calls":2,"resolved_calls":0},
            {"model":"mystery-alias","calls":1,"requested_calls":1,"resolved_calls":0},
            {"model":"mystery-model-2025","calls":1,"requested_calls":0,"resolved_calls":1}]})
    );

    // Methods and paths nobody serves answer 405 locally.
    assert_eq!(
        call(&server, "DELETE", "/v0/management/model-prices", None).0,
        405
    );
    assert_eq!(
        call(&server, "GET", "/v0/management/model-prices/sync", None).0,
        405
    );
    assert_eq!(
        call(&server, "GET", "/v0/management/model-prices/other", None).0,
        405
    );
}

#[test]
fn aliases_upsert_refuse_duplicates_delete_and_never_keep_raw_keys() {
    use cpamp_testkit::FakeCpaOptions;
    let runtime = crate::status::runtime();
    let cpa = crate::status::start_cpa(&runtime, FakeCpaOptions::new("cpa-key-for-alias-tests"));
    let data = tempfile::tempdir().expect("tempdir");
    let server = crate::status::start_server(
        data.path(),
        &cpa.base_url(),
        "cpa-key-for-alias-tests",
        &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)],
    );
    // A request with a raw client key arrives through the collector.
    let payload = json!({"timestamp":"2026-01-01T00:00:00Z","provider":"openai","model":"gpt-5",
        "api_key": RAW_CLIENT_KEY, "tokens":{"input_tokens":10,"output_tokens":5,"total_tokens":15}});
    assert!(cpa.push_raw(payload.to_string()));
    let hash = hash_api_key(RAW_CLIENT_KEY);
    assert!(crate::support::eventually(
        std::time::Duration::from_secs(20),
        || {
            let (_, usage) = call(&server, "GET", "/v0/management/usage", None);
            usage["total_requests"].as_i64() == Some(1)
        }
    ));

    assert_eq!(
        call(&server, "GET", "/v0/management/api-key-aliases", None),
        (200, json!({"items": []}))
    );
    let (status, body) = call(&server, "PUT", "/v0/management/api-key-aliases", Some("{}"));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("api_key_aliases_required"))
    );
    let other = "ab".repeat(32);
    let put = json!({"items":[{"apiKeyHash": hash.to_uppercase(), "alias":" CI bot ", "updatedAtMs": 1735696800000_i64},
                              {"apiKeyHash": other, "alias": "deploy"}]});
    let (status, listed) = call(
        &server,
        "PUT",
        "/v0/management/api-key-aliases/",
        Some(&put.to_string()),
    );
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["items"][0],
        json!({"apiKeyHash": hash, "alias": "CI bot", "updatedAtMs": 1735696800000_i64})
    );
    assert_eq!(listed["items"][1]["alias"], "deploy");

    let duplicate = json!({"items":[{"apiKeyHash": other, "alias":"ci BOT"}]});
    let (status, body) = call(
        &server,
        "PUT",
        "/v0/management/api-key-aliases",
        Some(&duplicate.to_string()),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("api_key_alias_duplicate")),
        "{body}"
    );
    let too_long = json!({"items":[{"apiKeyHash": other, "alias": "x".repeat(121)}]});
    let (status, body) = call(
        &server,
        "PUT",
        "/v0/management/api-key-aliases",
        Some(&too_long.to_string()),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("request_failed"))
    );
    assert_eq!(
        call(&server, "GET", "/v0/management/api-key-aliases", None).1,
        listed
    );

    assert_eq!(
        call(
            &server,
            "DELETE",
            &format!("/v0/management/api-key-aliases/{other}"),
            None
        ),
        (200, json!({"ok": true}))
    );
    assert_eq!(
        call(
            &server,
            "DELETE",
            &format!("/v0/management/api-key-aliases/{other}/"),
            None
        ),
        (200, json!({"ok": true}))
    );
    let (status, body) = call(
        &server,
        "DELETE",
        "/v0/management/api-key-aliases/not-a-hash",
        None,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("request_failed"))
    );
    assert_eq!(
        call(
            &server,
            "POST",
            "/v0/management/api-key-aliases",
            Some("{}")
        )
        .0,
        405
    );
    let (_, listed) = call(&server, "GET", "/v0/management/api-key-aliases", None);
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));

    // The raw key is nowhere in the database files, only its hash.
    server.terminate();
    let mut saw_hash = false;
    for entry in std::fs::read_dir(data.path()).expect("data dir") {
        let path = entry.expect("entry").path();
        if !path.to_string_lossy().contains("usage.sqlite") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            !bytes
                .windows(RAW_CLIENT_KEY.len())
                .any(|window| window == RAW_CLIENT_KEY.as_bytes()),
            "raw client key found in {}",
            path.display()
        );
        saw_hash |= bytes
            .windows(hash.len())
            .any(|window| window == hash.as_bytes());
    }
    assert!(saw_hash, "the alias is stored under the key's hash");
}

const MODELS_DEV: &str = r#"{"providers":{
    "openai":{"models":{"gpt-5":{"cost":{"input":1.25,"output":10,"cache_read":0.125,
        "tiers":[{"input":2.5,"output":15,"tier":{"type":"context","size":272000}}]},
        "experimental":{"modes":{"fast":{"cost":{"input":2.5,"output":20}}}}}}},
    "azure":{"models":{"gpt-5":{"cost":{"input":1.5,"output":12}}}}},
    "models":{"openai/gpt-5":{}}}"#;
const LITELLM: &str = r#"{"gpt-5":{"input_cost_per_token":2e-6,"output_cost_per_token":2e-5},
    "solo-litellm":{"input_cost_per_token":1e-6,"output_cost_per_token":4e-6},
    "azure/claude-x":{"input_cost_per_token":3e-6},"bedrock/claude-x":{"input_cost_per_token":3.3e-6}}"#;
const OPENROUTER: &str = r#"{"data":[{"id":"vendor/router-only","pricing":{"prompt":"0.0000005","completion":"0.0000015"}}]}"#;

fn prices_of(server: &ServerProcess) -> Value {
    call(server, "GET", "/v0/management/model-prices", None).1["prices"].clone()
}

#[test]
fn sync_from_local_sources_first_source_wins_with_fallback_pins_and_failures() {
    let sources = SourceServer::start();
    sources.serve("/models.dev", MODELS_DEV, Some("\"catalog-v1\""));
    sources.serve("/litellm", LITELLM, None);
    sources.serve("/openrouter", OPENROUTER, None);
    let data = tempfile::tempdir().expect("tempdir");
    let (models_dev, litellm, openrouter) = (
        sources.url("/models.dev"),
        sources.url("/litellm"),
        sources.url("/openrouter"),
    );
    let server = start(
        data.path(),
        &[
            ("MODEL_PRICE_SYNC_MODELS_DEV_URL", &models_dev),
            ("MODEL_PRICE_SYNC_LITELLM_URL", &litellm),
            ("MODEL_PRICE_SYNC_OPENROUTER_URL", &openrouter),
        ],
    );
    // A manual price is pinned: no sync may change it.
    let manual =
        json!({"prices": {"solo-litellm": {"prompt": 9, "completion": 9, "source": "manual"}}});
    assert_eq!(
        call(
            &server,
            "PUT",
            "/v0/management/model-prices",
            Some(&manual.to_string())
        )
        .0,
        200
    );

    let (status, result) = call(
        &server,
        "POST",
        "/v0/management/model-prices/sync",
        Some("{}"),
    );
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["source"], "multi");
    assert_eq!(
        result["sources"],
        json!(["models.dev", "litellm", "openrouter"])
    );
    let prices = &result["prices"];
    // models.dev is first and its official entry wins over LiteLLM's gpt-5.
    assert_eq!(prices["gpt-5"]["source"], "models.dev");
    assert_eq!(prices["gpt-5"]["sourceModelId"], "openai/gpt-5");
    assert_eq!(prices["gpt-5"]["prompt"], 1.25);
    assert_eq!(
        prices["gpt-5"]["contextTiers"][0]["thresholdTokens"],
        272000
    );
    assert_eq!(
        prices["gpt-5"]["serviceTiers"][0],
        json!({"mode":"fast","serviceTier":"priority","prompt":2.5,"completion":20.0,"cache":0.0,"promptConfigured":true,"completionConfigured":true})
    );
    assert_eq!(prices["gpt-5"]["pinned"], false);
    assert!(prices["gpt-5"]["syncedAtMs"].as_i64().is_some());
    assert_eq!(prices["vendor/router-only"]["source"], "openrouter");
    // `claude-x` matches two LiteLLM entries: ambiguous, not saved under that name.
    assert!(prices.get("claude-x").is_none());
    // The pinned manual price is kept and reported.
    assert_eq!(prices["solo-litellm"]["prompt"], 9.0);
    assert_eq!(result["pinned"], json!(["solo-litellm"]));
    assert_eq!(
        result["imported"].as_u64(),
        result["matched"].as_object().map(|m| m.len() as u64)
    );
    assert_eq!(
        result["sourceResults"][0],
        json!({"source":"models.dev","models":2,"skipped":0})
    );
    assert_eq!(prices_of(&server), *prices);

    // Requested models: models.dev alone covers gpt-5, so the others are not asked,
    // and models.dev is asked conditionally (304 reuses the last answer).
    let (litellm_hits, openrouter_hits) = (
        sources.hits("/litellm").len(),
        sources.hits("/openrouter").len(),
    );
    let (status, result) = call(
        &server,
        "POST",
        "/v0/management/model-prices/sync",
        Some(r#"{"models":["gpt-5"]}"#),
    );
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["source"], "models.dev");
    assert_eq!(result["matched"]["gpt-5"]["sourceModelId"], "openai/gpt-5");
    assert_eq!(sources.hits("/litellm").len(), litellm_hits);
    assert_eq!(sources.hits("/openrouter").len(), openrouter_hits);
    let last = sources.hits("/models.dev").pop().expect("asked");
    assert_eq!(last.if_none_match.as_deref(), Some("\"catalog-v1\""));

    // An ambiguous requested model gets candidates, never an automatic save.
    let (status, result) = call(
        &server,
        "POST",
        "/v0/management/model-prices/sync",
        Some(r#"{"models":["claude-x"]}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(result["candidates"][0]["model"], "claude-x");
    let candidates = result["candidates"][0]["candidates"]
        .as_array()
        .expect("candidates");
    assert!(candidates.len() >= 2, "{result}");
    assert!(
        candidates
            .iter()
            .all(|c| c["score"] == 0.94 && c["reason"] == "same-model-with-provider-prefix")
    );
    assert!(prices_of(&server).get("claude-x").is_none());

    // models.dev down: LiteLLM still answers, but gpt-5 (a models.dev price) is not
    // downgraded to LiteLLM's; it is reported as preserved.
    sources.fail("/models.dev", 503);
    let before = prices_of(&server);
    let (status, result) = call(
        &server,
        "POST",
        "/v0/management/model-prices/sync",
        Some(""),
    );
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["sources"], json!(["litellm", "openrouter"]));
    assert!(
        result["sourceResults"][0]["error"]
            .as_str()
            .is_some_and(|error| error.contains("503")),
        "{result}"
    );
    assert!(
        result["preserved"]
            .as_array()
            .is_some_and(|list| list.contains(&json!("gpt-5")))
    );
    assert_eq!(prices_of(&server)["gpt-5"], before["gpt-5"]);

    // Every source down: 502 with its code and nothing changes.
    sources.fail("/litellm", 500);
    sources.fail("/openrouter", 404);
    let before = prices_of(&server);
    let (status, body) = call(
        &server,
        "POST",
        "/v0/management/model-prices/sync",
        Some("{}"),
    );
    assert_eq!(status, 502);
    assert_eq!(body["code"], "model_price_sync_failed");
    let message = body["error"].as_str().expect("message");
    assert!(
        message.starts_with("model price sync failed; existing prices were not changed: "),
        "{message}"
    );
    assert!(
        message.contains("models.dev")
            && message.contains("litellm")
            && message.contains("openrouter")
    );
    assert_eq!(prices_of(&server), before);

    // After a sync from a local source, the dashboard shows a cost from it.
    drop(server);
    seed(data.path(), events());
    let server = start(data.path(), &[]);
    let (_, dashboard) = call(
        &server,
        "GET",
        &format!("/v0/management/dashboard/summary?{DAY}"),
        None,
    );
    assert_eq!(dashboard["top_models_today"][0]["cost"], 0.0028);
}

#[test]
fn prices_import_offline_and_adopt_a_go_database() {
    let data = tempfile::tempdir().expect("tempdir");
    let litellm = data.path().join("litellm.json");
    std::fs::write(&litellm, LITELLM).expect("write");
    let output = command(data.path(), &[])
        .args(["prices", "import"])
        .arg(&litellm)
        .output()
        .expect("import");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("Imported 4 prices from a litellm file"),
        "{printed}"
    );
    let book = data.path().join("book.json");
    std::fs::write(
        &book,
        r#"{"prices":{"house-model":{"prompt":1,"completion":2,"source":"manual"}}}"#,
    )
    .expect("write");
    let output = command(data.path(), &[])
        .args(["prices", "import"])
        .arg(&book)
        .output()
        .expect("import");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bad = data.path().join("bad.json");
    std::fs::write(&bad, "[1,2]").expect("write");
    let output = command(data.path(), &[])
        .args(["prices", "import"])
        .arg(&bad)
        .output()
        .expect("import");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--format"));

    let server = start(data.path(), &[]);
    let prices = prices_of(&server);
    assert_eq!(prices["gpt-5"]["source"], "litellm");
    assert_eq!(prices["gpt-5"]["prompt"], 2.0);
    assert_eq!(prices["house-model"]["pinned"], true);
    // The server holds the lock: an offline import refuses to run beside it.
    let output = command(data.path(), &[])
        .args(["prices", "import"])
        .arg(&book)
        .output()
        .expect("import");
    assert!(!output.status.success());
    drop(server);

    // A Go database: its prices (tiers, manual pins) and aliases show through the API.
    let go = tempfile::tempdir().expect("tempdir");
    write_go_database(&go.path().join("usage.sqlite"));
    let server = start(go.path(), &[]);
    let prices = prices_of(&server);
    assert_eq!(prices["gpt-5.5"]["source"], "models.dev");
    assert_eq!(prices["gpt-5.5"]["pinned"], false);
    assert_eq!(
        prices["gpt-5.5"]["contextTiers"][0]["thresholdTokens"],
        272000
    );
    assert_eq!(
        prices["gpt-5.5"]["serviceTiers"][0]["serviceTier"],
        "priority"
    );
    assert_eq!(prices["house"]["pinned"], true);
    let (_, aliases) = call(&server, "GET", "/v0/management/api-key-aliases", None);
    assert_eq!(
        aliases,
        json!({"items":[{"apiKeyHash": "ab".repeat(32), "alias": "ci-bot", "updatedAtMs": 7}]})
    );
}

fn write_go_database(path: &std::path::Path) {
    use sqlx::Connection;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut go = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("create");
        let core = [
            "CREATE TABLE usage_events (id INTEGER PRIMARY KEY AUTOINCREMENT, event_hash TEXT NOT NULL UNIQUE, \
             timestamp_ms INTEGER NOT NULL, timestamp TEXT NOT NULL, model TEXT NOT NULL, created_at_ms INTEGER NOT NULL)",
            "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at_ms INTEGER NOT NULL)",
        ];
        let tables = cpamp_testkit::go_schema::PRICE_AND_ALIAS_TABLES;
        let rows = cpamp_testkit::go_schema::PRICE_ROWS;
        for statement in core.iter().chain(&tables).chain(&rows) {
            sqlx::query(*statement)
                .execute(&mut go)
                .await
                .expect(statement);
        }
        sqlx::query("INSERT INTO api_key_aliases VALUES (?, 'ci-bot', 7)")
            .bind("ab".repeat(32))
            .execute(&mut go)
            .await
            .expect("alias");
        go.close().await.expect("close");
    });
}

#[test]
fn sync_goes_through_the_proxy_cpa_uses() {
    use cpamp_testkit::FakeCpaOptions;
    let sources = SourceServer::start();
    sources.serve("/litellm", LITELLM, None);
    let proxy = ConnectProxy::start();
    let runtime = crate::status::runtime();
    let mut options = FakeCpaOptions::new("cpa-key-for-proxy-tests");
    options.proxy_url = proxy.url();
    let cpa = crate::status::start_cpa(&runtime, options);
    let data = tempfile::tempdir().expect("tempdir");
    let litellm = sources.url("/litellm");
    let server = crate::status::start_server(
        data.path(),
        &cpa.base_url(),
        "cpa-key-for-proxy-tests",
        &[
            ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY),
            ("MODEL_PRICE_SYNC_MODELS_DEV_URL", "off"),
            ("MODEL_PRICE_SYNC_LITELLM_URL", &litellm),
            ("MODEL_PRICE_SYNC_OPENROUTER_URL", "off"),
        ],
    );
    let (status, result) = call(
        &server,
        "POST",
        "/v0/management/model-prices/sync",
        Some("{}"),
    );
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["proxyUsed"], true);
    assert_eq!(result["source"], "litellm");
    assert_eq!(result["prices"]["gpt-5"]["source"], "litellm");
    let source_authority = litellm
        .trim_start_matches("http://")
        .trim_end_matches("/litellm")
        .to_string();
    assert_eq!(proxy.targets(), vec![source_authority]);
    assert_eq!(
        sources.hits("/litellm").len(),
        1,
        "the source was reached through the tunnel"
    );
    drop(server);

    // A proxy URL cpamp cannot use fails the sync instead of going around the proxy.
    let mut options = FakeCpaOptions::new("cpa-key-for-proxy-tests");
    options.proxy_url = "gopher://user:secret@proxy.lan:70".into();
    let cpa = crate::status::start_cpa(&runtime, options);
    let server = crate::status::start_server(
        data.path(),
        &cpa.base_url(),
        "cpa-key-for-proxy-tests",
        &[
            ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY),
            ("MODEL_PRICE_SYNC_MODELS_DEV_URL", "off"),
            ("MODEL_PRICE_SYNC_LITELLM_URL", &litellm),
            ("MODEL_PRICE_SYNC_OPENROUTER_URL", "off"),
        ],
    );
    let (status, body) = call(
        &server,
        "POST",
        "/v0/management/model-prices/sync",
        Some("{}"),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("model_price_sync_failed")),
        "{body}"
    );
    let message = body["error"].as_str().expect("message");
    assert!(
        message.contains("invalid proxy URL") && !message.contains("secret"),
        "{message}"
    );
    assert_eq!(sources.hits("/litellm").len(), 1, "nothing was fetched");
}
