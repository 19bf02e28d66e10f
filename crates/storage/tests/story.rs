//! Storage story: one database file through its life — migrate from empty, insert a
//! batch, see duplicates skipped, keep a dead letter, reopen and find it all again.

use cpamp_domain::event::{DeadLetter, TokenCounts, UsageEvent};
use cpamp_domain::ports::{
    BatchOrigin, BatchOutcome, EventSink, IngestBatch, SettingsStore, StoreStats,
};
use cpamp_storage::{Options, SqliteStore};

fn event(request_id: &str, hash_byte: u8, timestamp_ms: i64) -> UsageEvent {
    UsageEvent {
        event_hash: format!("{hash_byte:02x}").repeat(32),
        request_id: Some(request_id.to_string()),
        timestamp_ms,
        timestamp: cpamp_domain::event::format_timestamp_ms(timestamp_ms),
        provider: Some("codex".into()),
        model: "gpt-5.5".into(),
        resolved_model: Some("gpt-5.5".into()),
        endpoint: Some("POST /v1/responses".into()),
        source: Some("bob***@example.net".into()),
        tokens: TokenCounts {
            input: 100,
            output: 20,
            total: 120,
            ..TokenCounts::default()
        },
        latency_ms: Some(1500),
        created_at_ms: timestamp_ms + 10,
        ..UsageEvent::default()
    }
}

fn batch(events: Vec<UsageEvent>, dead_letters: Vec<DeadLetter>) -> IngestBatch {
    IngestBatch {
        origin: BatchOrigin::Collector("http://127.0.0.1:8317".into()),
        events,
        dead_letters,
    }
}

#[tokio::test]
async fn a_database_file_keeps_every_event_once_across_reopen() {
    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("nested").join("usage.sqlite");

    let store = SqliteStore::open(Options::new(&path))
        .await
        .expect("open empty");
    assert_eq!(store.journal_mode().await.expect("journal mode"), "wal");
    assert_eq!(store.counts().await.expect("counts").events, 0);

    let first = store
        .store_batch(batch(
            vec![
                event("r1", 1, 1_767_225_600_000),
                event("r1", 2, 1_767_225_601_000),
            ],
            vec![],
        ))
        .await
        .expect("first batch");
    assert_eq!(
        first,
        BatchOutcome {
            inserted: 2,
            skipped: 0,
            dead_lettered: 0,
            fresh: vec![0, 1],
        }
    );

    // The same events again, plus a copy inside the same batch and one new event.
    let dead = DeadLetter {
        payload: "{\"truncated\":".into(),
        reason: "invalid JSON at line 1 column 13".into(),
        created_at_ms: 5,
    };
    let second = store
        .store_batch(batch(
            vec![
                event("r1", 1, 1_767_225_600_000),
                event("r3", 3, 1_767_225_602_000),
                event("r3", 3, 1_767_225_602_000),
            ],
            vec![dead.clone()],
        ))
        .await
        .expect("second batch");
    assert_eq!(
        second,
        BatchOutcome {
            inserted: 1,
            skipped: 2,
            dead_lettered: 1,
            fresh: vec![1],
        }
    );

    store
        .put_setting("bootstrap_state_v1", "{\"version\":1}")
        .await
        .expect("setting");
    store.close().await;

    let reopened = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    let counts = reopened.counts().await.expect("counts");
    assert_eq!((counts.events, counts.dead_letters), (3, 1));
    assert_eq!(
        reopened
            .get_setting("bootstrap_state_v1")
            .await
            .expect("read setting")
            .as_deref(),
        Some("{\"version\":1}")
    );
    assert_eq!(
        reopened.get_setting("missing").await.expect("read missing"),
        None
    );

    // A duplicate after reopening is still recognised.
    let third = reopened
        .store_batch(batch(vec![event("r3", 3, 1_767_225_602_000)], vec![]))
        .await
        .expect("third batch");
    assert_eq!(
        third,
        BatchOutcome {
            inserted: 0,
            skipped: 1,
            dead_lettered: 0,
            fresh: vec![],
        }
    );
    reopened.close().await;
}

#[tokio::test]
async fn a_batch_that_cannot_be_written_stores_nothing_and_can_be_retried() {
    use sqlx::Connection;

    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("usage.sqlite");
    let mut options = Options::new(&path);
    options.busy_timeout = std::time::Duration::from_millis(100);
    let store = SqliteStore::open(options).await.expect("open");
    store
        .store_batch(batch(vec![event("a", 1, 1_000_000)], vec![]))
        .await
        .expect("seed");

    // Another process holds the write lock: the batch must fail as a whole.
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("blocker");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("lock");
    let pending = batch(
        vec![event("b", 2, 2_000_000), event("c", 3, 3_000_000)],
        vec![],
    );
    let error = store
        .store_batch(pending.clone())
        .await
        .expect_err("locked database");
    assert!(cpamp_storage::is_unavailable(&error), "{error}");
    assert!(error.to_string().contains("locked"), "{error}");
    assert_eq!(store.counts().await.expect("counts").events, 1);

    // Once the lock is gone the same batch goes in whole, exactly once.
    sqlx::query("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("unlock");
    let outcome = store.store_batch(pending.clone()).await.expect("retry");
    assert_eq!(
        outcome,
        BatchOutcome {
            inserted: 2,
            skipped: 0,
            dead_lettered: 0,
            fresh: vec![0, 1],
        }
    );
    let again = store.store_batch(pending).await.expect("replay");
    assert_eq!(
        again,
        BatchOutcome {
            inserted: 0,
            skipped: 2,
            dead_lettered: 0,
            fresh: vec![],
        }
    );
    assert_eq!(store.counts().await.expect("counts").events, 3);
    store.close().await;
}

#[tokio::test]
async fn a_commit_that_fails_on_a_read_only_file_is_not_reported_as_stored_later() {
    use sqlx::Connection;

    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    store
        .store_batch(batch(vec![event("a", 1, 1_000_000)], vec![]))
        .await
        .expect("seed");

    let wal = directory.path().join("usage.sqlite-wal");
    let refused = batch(
        vec![event("b", 2, 2_000_000), event("c", 3, 3_000_000)],
        vec![],
    );
    {
        let _read_only = cpamp_testkit::ReadOnlyFiles::set(vec![wal.clone(), path.clone()]);
        let error = store
            .store_batch(refused.clone())
            .await
            .expect_err("read-only files");
        assert!(cpamp_storage::is_unavailable(&error), "{error}");
    }

    // Writable again: later batches and the retried one must really be on disk.
    let later = store
        .store_batch(batch(vec![event("d", 4, 4_000_000)], vec![]))
        .await
        .expect("later batch");
    assert_eq!(later.inserted, 1);
    let retried = store.store_batch(refused).await.expect("retry");
    assert_eq!(retried.inserted, 2);

    let mut fresh = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("fresh connection");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_events")
        .fetch_one(&mut fresh)
        .await
        .expect("count");
    assert_eq!(rows, 4, "rows another connection sees");
    assert_eq!(store.counts().await.expect("counts").events, 4);
    fresh.close().await.expect("close");
    store.close().await;
}

/// The identity ledger keys an event by its hash's 32 raw bytes; a hash that is not 64 hex
/// digits (the decoder never makes one, an imported file might) is hashed again, so it
/// still dedupes against itself and collides with nothing else.
#[tokio::test]
async fn event_hashes_dedupe_by_their_raw_bytes_and_malformed_ones_stay_apart() {
    use sqlx::Connection;

    let directory = tempfile::tempdir().expect("temp dir");
    let path = directory.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    let with_hash = |request_id: &str, hash: &str, timestamp_ms: i64| UsageEvent {
        event_hash: hash.to_string(),
        ..event(request_id, 0, timestamp_ms)
    };
    let events = vec![
        with_hash("hex", &"ab".repeat(32), 1_000_000),
        with_hash("not-hex-z", &"z".repeat(64), 2_000_000),
        with_hash("not-hex-y", &"y".repeat(64), 3_000_000),
        with_hash("short-a", "abc", 4_000_000),
        with_hash("short-b", "abd", 5_000_000),
    ];
    let first = store
        .store_batch(batch(events.clone(), vec![]))
        .await
        .expect("first");
    assert_eq!((first.inserted, first.skipped), (5, 0), "{first:?}");
    let again = store
        .store_batch(batch(events, vec![]))
        .await
        .expect("again");
    assert_eq!((again.inserted, again.skipped), (0, 5), "{again:?}");
    store.close().await;

    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let mut ledger: Vec<String> =
        sqlx::query_scalar(
            "SELECT lower(hex(coalesce(ledger.event_hash, event.event_hash))) \
             FROM usage_event_ledger ledger LEFT JOIN usage_events event ON event.id = ledger.event_id \
             UNION ALL SELECT lower(hex(event_hash)) FROM usage_event_ledger_overflow",
        )
            .fetch_all(&mut connection)
            .await
            .expect("ledger");
    ledger.sort();
    let mut expected = vec!["ab".repeat(32)];
    for malformed in [
        "z".repeat(64),
        "y".repeat(64),
        "abc".to_string(),
        "abd".to_string(),
    ] {
        use sha2::Digest;
        expected.push(hex::encode(sha2::Sha256::digest(malformed.as_bytes())));
    }
    expected.sort();
    assert_eq!(ledger, expected);
}

/// True when `needle` occurs in the database file or its WAL.
fn in_files(path: &std::path::Path, needle: &str) -> bool {
    let wal = path.with_file_name("usage.sqlite-wal");
    [path.to_path_buf(), wal].iter().any(|file| {
        std::fs::read(file)
            .unwrap_or_default()
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    })
}

#[tokio::test]
async fn dead_letters_never_keep_a_client_key_in_the_file() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    let key = "client-key-FAKE-dead-letter-01";
    let dead = DeadLetter {
        payload: format!(r#"{{"api_key":"{key}","timestamp":"yesterday","model":"gpt-x"}}"#),
        reason: "timestamp \"yesterday\" is not a time".into(),
        created_at_ms: 5,
    };
    store
        .store_batch(batch(vec![], vec![dead]))
        .await
        .expect("store");
    store.close().await;
    assert!(!in_files(&path, key), "new dead letter kept the key");

    // A row written raw by an earlier release is redacted once at the next open.
    let old_key = "client-key-FAKE-dead-letter-02";
    {
        use sqlx::Connection;
        let mut connection =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("connect");
        sqlx::query(
            "INSERT INTO dead_letter_events (payload, error, created_at_ms) VALUES (?, 'x', 6)",
        )
        .bind(format!(r#"{{"apiKey":"{old_key}","model":"gpt-y"}}"#))
        .execute(&mut connection)
        .await
        .expect("raw row");
        sqlx::query("INSERT INTO usage_rollup_backfill (name) VALUES ('redact_dead_letters')")
            .execute(&mut connection)
            .await
            .expect("mark");
        connection.close().await.expect("close");
    }
    assert!(in_files(&path, old_key), "the raw row was not written");
    let reopened = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    reopened.close().await;
    assert!(
        !in_files(&path, old_key),
        "the old dead letter kept the key"
    );
    let payloads = {
        use sqlx::Connection;
        let mut connection =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display()))
                .await
                .expect("connect");
        sqlx::query_scalar::<_, String>("SELECT payload FROM dead_letter_events ORDER BY id")
            .fetch_all(&mut connection)
            .await
            .expect("payloads")
    };
    assert_eq!(
        payloads,
        vec![
            r#"{"api_key":"[redacted]","timestamp":"yesterday","model":"gpt-x"}"#.to_string(),
            r#"{"apiKey":"[redacted]","model":"gpt-y"}"#.to_string(),
        ]
    );
}

#[tokio::test]
async fn opening_a_store_bounds_the_memory_of_every_sqlite_connection_in_the_process() {
    let directory = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(directory.path().join("usage.sqlite")))
        .await
        .expect("open");
    // The limit is SQLite's, one for the process: a connection the store never saw
    // reports it too.
    let other = rusqlite::Connection::open_in_memory().expect("in-memory connection");
    let limit: i64 = other
        .query_row("PRAGMA soft_heap_limit", [], |row| row.get(0))
        .expect("soft heap limit");
    assert_eq!(
        u64::try_from(limit).expect("a limit"),
        cpamp_storage::DEFAULT_SOFT_HEAP_LIMIT
    );
    assert_eq!(store.counts().await.expect("counts").events, 0);
}
