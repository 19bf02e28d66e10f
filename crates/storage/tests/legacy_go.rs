//! A database written by the Go Manager Server keeps working: its settings and dead
//! letters are there at once, its events are adopted in the background with their
//! hashes, and a payload CPA delivers again still dedupes against them. Its prices,
//! aliases, cooldowns, candidates and quota snapshots carry on.

use cpamp_domain::analytics::accounts::AccountTarget;
use cpamp_domain::automation::quota::QuotaStore;
use cpamp_domain::automation::store::{CandidateStore, CooldownStore};
use cpamp_domain::decode::decode;
use cpamp_domain::event::Decoded;
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch, SettingsStore, StoreStats};
use cpamp_domain::prices::{PriceStore, Rate};
use cpamp_storage::{AdoptionStep, Options, SqliteStore};
use sqlx::Connection;

/// The worked example of the dedupe hash (a current CPA payload) and its hash.
const PAYLOAD: &str = r#"{"timestamp":"2026-08-22T22:00:23.007+08:00","latency_ms":64110,"source":"bob.ops@example.net","auth_index":"85ad019fd40e1278","tokens":{"input_tokens":91877,"output_tokens":6210,"reasoning_tokens":4096,"cached_tokens":88320,"cache_read_tokens":88320,"total_tokens":98087},"failed":false,"provider":"codex","model":"gpt-5.5","alias":"fast","endpoint":"POST /v1/responses","request_id":"9b1e04fa"}"#;
const PAYLOAD_HASH: &str = "95889cb1b091c4f4442dd5d36504408d3004cb7e2a043537f12a0ed318a6dbf9";

async fn write_go_database(path: &std::path::Path) {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut go = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("create Go db");
    let statements = [
        "PRAGMA journal_mode=WAL",
        // A subset of Go's columns, as an older Go release would have them.
        "CREATE TABLE usage_events (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, \
         event_hash TEXT NOT NULL UNIQUE, timestamp_ms INTEGER NOT NULL, timestamp TEXT NOT NULL, \
         provider TEXT, model TEXT NOT NULL, requested_model TEXT, resolved_model TEXT, endpoint TEXT, \
         auth_index TEXT, source TEXT, source_hash TEXT, api_key_hash TEXT, cache_input_mode TEXT, \
         input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, \
         reasoning_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0, \
         total_tokens INTEGER NOT NULL DEFAULT 0, normalized_total_input_tokens INTEGER, \
         latency_ms INTEGER, failed INTEGER NOT NULL DEFAULT 0, fail_status_code INTEGER, \
         fail_summary TEXT, fail_body TEXT, raw_json TEXT, created_at_ms INTEGER NOT NULL)",
        "CREATE INDEX idx_usage_events_timestamp ON usage_events(timestamp_ms)",
        "CREATE TABLE usage_event_identity_ledger (event_hash TEXT PRIMARY KEY, raw_event_id INTEGER, \
         timestamp_ms INTEGER NOT NULL, bucket_ms INTEGER NOT NULL, aggregate_schema_version INTEGER NOT NULL DEFAULT 0, \
         aggregate_structure_revision TEXT NOT NULL DEFAULT '', first_seen_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL)",
        "CREATE TABLE dead_letter_events (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT NOT NULL, error TEXT NOT NULL, created_at_ms INTEGER NOT NULL)",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at_ms INTEGER NOT NULL)",
        "INSERT INTO settings VALUES ('manager_config_v1', '{\"cpaConnection\":{\"cpaBaseUrl\":\"http://cpa:8317\"}}', 1)",
        "INSERT INTO dead_letter_events (payload, error, created_at_ms) VALUES ('{\"api_key\":\"go-client-key-FAKE-0077\",\"timestamp\":', 'unexpected end of JSON input', 5)",
        "INSERT INTO api_key_aliases VALUES ('kh1', 'ci-bot', 1)",
        // Account automation: one active and one ended cooldown, one pending candidate.
        "CREATE TABLE quota_cooldowns (id INTEGER PRIMARY KEY AUTOINCREMENT, auth_file_name TEXT NOT NULL, \
         auth_index TEXT, account_snapshot TEXT, provider TEXT, reason_code TEXT, window_kind TEXT, \
         evidence_json TEXT, recover_at_ms INTEGER NOT NULL, owner TEXT NOT NULL, event_hash TEXT, \
         pre_disabled_state INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, disabled_at_ms INTEGER, \
         recovered_at_ms INTEGER, last_error TEXT, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL)",
        "CREATE UNIQUE INDEX idx_quota_cooldowns_active ON quota_cooldowns(auth_file_name, owner) WHERE status = 'active'",
        "INSERT INTO quota_cooldowns (auth_file_name, auth_index, account_snapshot, provider, reason_code, window_kind, \
         recover_at_ms, owner, status, disabled_at_ms, created_at_ms, updated_at_ms) VALUES \
         ('codex-a.json', '3f9c', 'a@example.com', 'codex', 'codex_usage_limit_reached', 'weekly', 1900000000000, \
          'cpamp_usage_429', 'active', 1787000000000, 1787000000000, 1787000000000), \
         ('codex-b.json', NULL, NULL, 'codex', NULL, NULL, 1787000000000, 'cpamp_usage_429', 'recovered', 1, 1, 1)",
        "CREATE TABLE account_action_candidates (id INTEGER PRIMARY KEY AUTOINCREMENT, action_type TEXT NOT NULL, \
         status TEXT NOT NULL, provider TEXT, auth_file_name TEXT NOT NULL, auth_index TEXT, account_snapshot TEXT, \
         account_id_snapshot TEXT, auth_label TEXT, reason_code TEXT, reason TEXT NOT NULL, \
         auto_disable_eligible INTEGER NOT NULL DEFAULT 0, auto_disabled_at_ms INTEGER, evidence_json TEXT, \
         last_error TEXT, first_seen_at_ms INTEGER NOT NULL, last_seen_at_ms INTEGER NOT NULL, \
         hit_count INTEGER NOT NULL DEFAULT 1, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL)",
        "INSERT INTO account_action_candidates (action_type, status, provider, auth_file_name, auth_index, reason_code, \
         reason, auto_disable_eligible, first_seen_at_ms, last_seen_at_ms, hit_count, created_at_ms, updated_at_ms) \
         VALUES ('reauth', 'pending', 'codex', 'codex-c.json', '77', 'token_revoked', 'reauthorize', 1, 5, 9, 4, 5, 9)",
        "INSERT INTO api_key_aliases VALUES ('KH2', 'CI-Bot', 2)",
    ];
    let tables = cpamp_testkit::go_schema::PRICE_AND_ALIAS_TABLES;
    let rows = cpamp_testkit::go_schema::PRICE_ROWS;
    for statement in tables.iter().chain(&statements).chain(&rows) {
        sqlx::query(*statement)
            .execute(&mut go)
            .await
            .expect(statement);
    }
    for (index, hash) in [PAYLOAD_HASH.to_string(), "ab".repeat(32), "cd".repeat(32)]
        .iter()
        .enumerate()
    {
        let index = index as i64;
        sqlx::query(
            "INSERT INTO usage_events (request_id, event_hash, timestamp_ms, timestamp, provider, model, \
             resolved_model, endpoint, source, input_tokens, output_tokens, total_tokens, latency_ms, failed, \
             fail_status_code, fail_summary, fail_body, raw_json, created_at_ms) \
             VALUES (?, ?, ?, ?, 'codex', 'fast', 'gpt-5.5', 'POST /v1/responses', 'bob***@example.net', 100, 20, 120, 900, ?, ?, ?, 'secret body', '{}', ?)",
        )
        .bind(format!("go-{index}"))
        .bind(hash)
        .bind(1_787_000_000_000 + index * 1000)
        .bind(cpamp_domain::event::format_timestamp_ms(1_787_000_000_000 + index * 1000))
        .bind(index == 2)
        .bind((index == 2).then_some(429))
        .bind((index == 2).then_some("rate limited"))
        .bind(1_787_000_000_500 + index * 1000)
        .execute(&mut go)
        .await
        .expect("insert Go event");
        sqlx::query("INSERT INTO usage_event_identity_ledger VALUES (?, ?, 0, 0, 0, '', 1, 1)")
            .bind(hash)
            .bind(index + 1)
            .execute(&mut go)
            .await
            .expect("ledger");
    }
    // Quota snapshots (Go's table): two reports of the five-hour window a cycle
    // apart, one of the weekly window, and ten old reports that are never shown.
    sqlx::query(
        "CREATE TABLE account_quota_snapshots (id integer primary key autoincrement, \
         observation_id integer, logical_window_id integer, activation_id integer, cycle_id integer, \
         account_key text not null, provider text not null, provider_window_id text not null, \
         window_kind text not null, window_mode text not null, model_scope_kind text not null, \
         model_scope_key text, model_ids_json text, scope_fingerprint text not null default '', \
         content_hash text not null default '', source text not null, source_observation_id text, \
         observed_at_ms integer not null, boundary_accuracy text not null, cycle_start_ms integer, \
         cycle_end_ms integer, duration_seconds integer, used_percent real, remaining_percent real, \
         used_value real, limit_value real, quota_unit text, reset_credits_available integer, \
         reset_credits_json text, plan_type text, created_at_ms integer not null)",
    )
    .execute(&mut go)
    .await
    .expect("Go quota snapshot table");
    let key = codex_account_key();
    let hour = 3_600_000_i64;
    let mut reports: Vec<(&str, i64, i64, i64, f64)> = vec![
        (
            "five-hour",
            1_787_000_000_000,
            1_787_000_000_000 + 5 * hour,
            18_000,
            90.0,
        ),
        (
            "five-hour",
            1_787_000_000_000 + 6 * hour,
            1_787_000_000_000 + 10 * hour,
            18_000,
            15.0,
        ),
        (
            "weekly",
            1_787_000_000_000 + 6 * hour,
            1_787_000_000_000 + 168 * hour,
            604_800,
            40.0,
        ),
    ];
    for old in 0..10 {
        reports.push((
            "five-hour",
            1_786_000_000_000 + old * hour,
            1_786_000_000_000 + old * hour + 5 * hour,
            18_000,
            1.0,
        ));
    }
    for (window, observed, end, seconds, used) in reports {
        sqlx::query(
            "INSERT INTO account_quota_snapshots (account_key, provider, provider_window_id, window_kind, \
             window_mode, model_scope_kind, model_scope_key, source, source_observation_id, observed_at_ms, \
             boundary_accuracy, cycle_start_ms, cycle_end_ms, duration_seconds, used_percent, plan_type, \
             reset_credits_available, created_at_ms) VALUES (?, 'codex', ?, '', 'fixed', 'family', 'codex_main', \
             'response_header', ?, ?, 'exact', ?, ?, ?, ?, 'plus', 2, ?)",
        )
        .bind(&key)
        .bind(window)
        .bind(format!("req-{observed}"))
        .bind(observed)
        .bind(end - seconds * 1000)
        .bind(end)
        .bind(seconds)
        .bind(used)
        .bind(observed)
        .execute(&mut go)
        .await
        .expect("Go quota snapshot");
    }
    // A hash whose event Go no longer stores.
    sqlx::query("INSERT INTO usage_event_identity_ledger VALUES (?, NULL, 0, 0, 0, '', 1, 1)")
        .bind("ef".repeat(32))
        .execute(&mut go)
        .await
        .expect("orphan ledger row");
    go.close().await.expect("close");
}

/// The account key the panel asks for: Codex account `codex-a.json`, auth index `3f9c`.
fn codex_account_key() -> String {
    AccountTarget {
        auth_file_snapshot: "codex-a.json".into(),
        auth_provider_snapshot: "codex".into(),
        auth_index: "3f9c".into(),
        ..AccountTarget::default()
    }
    .key()
}

#[tokio::test]
async fn a_go_database_is_adopted_in_place() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("usage.sqlite");
    write_go_database(&path).await;

    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("open Go database");
    // Prices (with tiers; the manual one pinned) and aliases are there at once.
    let prices = store.prices().await.expect("prices");
    assert_eq!(prices.len(), 2);
    let synced = &prices["gpt-5.5"];
    assert_eq!(synced.rates.prompt.value, 5.0);
    assert_eq!(synced.rates.cache_read, Rate::set(0.5));
    assert_eq!(synced.source, "models.dev");
    assert_eq!(synced.source_model_id, "openai/gpt-5.5");
    assert_eq!(synced.synced_at_ms, Some(11));
    assert!(!synced.pinned);
    assert_eq!(synced.context_tiers[0].threshold_tokens, 272_000);
    assert_eq!(synced.context_tiers[0].rates.prompt, Rate::set(10.0));
    assert_eq!(synced.service_tiers[0].mode, "fast");
    assert_eq!(synced.service_tiers[0].rates.prompt, Rate::set(12.5));
    assert!(prices["house"].pinned, "manual prices are pinned");
    let aliases = store.api_key_aliases().await.expect("aliases");
    let aliases: Vec<_> = aliases
        .iter()
        .map(|alias| (alias.api_key_hash.as_str(), alias.alias.as_str()))
        .collect();
    assert_eq!(aliases, vec![("kh1", "ci-bot"), ("kh2", "CI-Bot (kh2)")]);

    // Settings and dead letters are there at once.
    assert!(
        store
            .get_setting("manager_config_v1")
            .await
            .expect("setting")
            .is_some()
    );
    assert_eq!(store.counts().await.expect("counts").dead_letters, 1);
    // The Go server kept dead letters raw; adopted ones are redacted, and the raw text
    // is gone from the files too.
    for name in ["usage.sqlite", "usage.sqlite-wal"] {
        let bytes = std::fs::read(directory.path().join(name)).unwrap_or_default();
        let needle = b"go-client-key-FAKE-0077";
        assert!(
            !bytes.windows(needle.len()).any(|window| window == needle),
            "raw key in {name}"
        );
    }
    // Go's cooldowns (restores still due) and pending candidates carry on.
    let cooldowns = store.active_cooldowns().await.expect("cooldowns");
    assert_eq!(cooldowns.len(), 1);
    assert_eq!(
        (
            cooldowns[0].auth_file_name.as_str(),
            cooldowns[0].auth_index.as_str(),
            cooldowns[0].recover_at_ms
        ),
        ("codex-a.json", "3f9c", 1_900_000_000_000)
    );
    let (candidates, pending) = store.candidates(None, 10).await.expect("candidates");
    assert_eq!((candidates.len(), pending), (1, 1));
    assert_eq!(
        (candidates[0].hit_count, candidates[0].reason_code.as_str()),
        (4, "token_revoked")
    );

    // Quota snapshots: each window with its newest report and the previous cycle.
    let windows = store
        .account_windows(&codex_account_key(), "codex")
        .await
        .expect("quota windows");
    let mut shown: Vec<_> = windows
        .iter()
        .map(|window| {
            (
                window.input.provider_window_id.as_str(),
                window.input.used_percent,
                window.availability.as_str(),
                window.source.as_str(),
                window.previous_cycle.map(|(_, end, used)| (end, used)),
            )
        })
        .collect();
    shown.sort_by(|a, b| a.0.cmp(b.0));
    let hour = 3_600_000_i64;
    assert_eq!(
        shown,
        vec![
            (
                "five-hour",
                Some(15.0),
                "active",
                "response_header",
                Some((1_787_000_000_000 + 5 * hour, Some(90.0)))
            ),
            ("weekly", Some(40.0), "active", "response_header", None),
        ]
    );
    assert_eq!(windows[0].input.reset_credits_available, Some(2.0));
    let reports: i64 = sqlx::query_scalar("SELECT count(*) FROM account_quota_snapshots")
        .fetch_one(
            &mut sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("connect"),
        )
        .await
        .expect("count");
    assert_eq!(
        reports,
        3 + 8 - 2,
        "the 8 newest five-hour reports and the weekly one"
    );

    // Events arrive in batches through the ingest path.
    assert_eq!(
        store.adopt_legacy_events(2).await.expect("step"),
        AdoptionStep::Copied {
            rows: 2,
            inserted: 2
        }
    );
    assert_eq!(
        store.adopt_legacy_events(2).await.expect("step"),
        AdoptionStep::Copied {
            rows: 1,
            inserted: 1
        }
    );
    assert_eq!(
        store.adopt_legacy_events(2).await.expect("step"),
        AdoptionStep::Finished
    );
    assert_eq!(
        store.adopt_legacy_events(2).await.expect("step"),
        AdoptionStep::Nothing
    );
    assert_eq!(store.counts().await.expect("counts").events, 3);

    // CPA delivering the same payload again is recognised by its hash.
    let Decoded::Event(event) = decode(PAYLOAD.as_bytes(), 1) else {
        panic!("payload must decode")
    };
    assert_eq!(event.event_hash, PAYLOAD_HASH);
    let outcome = store
        .store_batch(IngestBatch {
            origin: BatchOrigin::Collector("http://cpa:8317".into()),
            events: vec![*event],
            dead_letters: vec![],
        })
        .await
        .expect("store");
    assert_eq!((outcome.inserted, outcome.skipped), (0, 1));
    store.close().await;

    // The Go event, price and alias tables are gone, and the raw bodies Go kept
    // were not carried over.
    let mut check = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("check");
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'legacy_go_%' ORDER BY name")
        .fetch_all(&mut check)
        .await
        .expect("tables");
    assert_eq!(tables, Vec::<String>::new());
    let orphan: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM usage_event_ledger WHERE event_id IS NULL AND length(event_hash) = 32",
    )
    .fetch_one(&mut check)
    .await
    .expect("ledger");
    assert_eq!(
        orphan, 1,
        "hashes of events Go no longer stored keep deduping"
    );
    let database = std::fs::read(&path).expect("read");
    assert!(!database.windows(11).any(|window| window == b"secret body"));

    // Reopening does not adopt anything twice.
    drop(check);
    let reopened = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    assert_eq!(
        reopened.adopt_legacy_events(10).await.expect("step"),
        AdoptionStep::Nothing
    );
    assert_eq!(reopened.counts().await.expect("counts").events, 3);
    assert_eq!(reopened.prices().await.expect("prices").len(), 2);
    reopened.close().await;
}
