//! Export streams, import round trips and online backups against real SQLite files.

use std::ops::ControlFlow;

use cpamp_domain::analytics::query::{AnalyticsStore, GroupRequest, Scope};
use cpamp_domain::decode::decode;
use cpamp_domain::event::{Decoded, UsageEvent};
use cpamp_domain::ports::{
    BatchOrigin, DatabaseBackup, EventPages, EventSelection, EventSink, EventStream, ExportChunks,
    IngestBatch, StreamOrder,
};
use cpamp_domain::transfer::export::ExportFormat;
use cpamp_domain::transfer::import::read_import;
use cpamp_storage::{Options, SqliteStore};
use cpamp_testkit::corpus::Corpus;

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const STEP_MS: i64 = 7_919;

async fn open(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::open(Options::new(dir.path().join(name)))
        .await
        .expect("open store")
}

fn corpus(count: u64) -> Vec<UsageEvent> {
    Corpus::new(count, START_MS, STEP_MS)
        .map(|payload| match decode(&payload, START_MS) {
            Decoded::Event(event) => *event,
            other => panic!("corpus payload did not decode: {other:?}"),
        })
        .collect()
}

async fn store(store: &SqliteStore, events: Vec<UsageEvent>, origin: BatchOrigin) -> (u64, u64) {
    let mut inserted = 0;
    let mut skipped = 0;
    for chunk in events.chunks(500) {
        let outcome = store
            .store_batch(IngestBatch {
                origin: origin.clone(),
                events: chunk.to_vec(),
                dead_letters: Vec::new(),
            })
            .await
            .expect("store batch");
        inserted += outcome.inserted;
        skipped += outcome.skipped;
    }
    (inserted, skipped)
}

/// Exports through `open_export` and checks the bytes against the page stream
/// written event by event.
async fn export(
    store: &SqliteStore,
    selection: EventSelection,
    format: ExportFormat,
) -> (u64, String) {
    let (total, expected) = export_pages(store, selection.clone(), format).await;
    let mut export = store
        .open_export(selection, format)
        .await
        .expect("open export");
    assert_eq!(export.total(), total);
    let mut out = String::new();
    let mut chunks = 0;
    while let Some(chunk) = export.next_chunk().await.expect("chunk") {
        assert!(!chunk.is_empty());
        out.push_str(&chunk);
        chunks += 1;
    }
    assert!(
        export.next_chunk().await.expect("after the end").is_none(),
        "an export stays finished"
    );
    assert!(chunks <= 1 + out.len() / (200 * 1024), "chunks are large");
    assert!(out == expected, "export bytes differ from the page stream");
    (total, out)
}

async fn export_pages(
    store: &SqliteStore,
    selection: EventSelection,
    format: ExportFormat,
) -> (u64, String) {
    let mut pages = store
        .open_event_stream(selection)
        .await
        .expect("open stream");
    let total = pages.total();
    let mut out = format.preamble();
    loop {
        let page = pages.next_page().await.expect("page");
        if page.is_empty() {
            break;
        }
        for event in &page {
            format.write_event(&mut out, event);
        }
    }
    (total, out)
}

fn import(text: &str) -> Vec<UsageEvent> {
    let mut events = Vec::new();
    let report = read_import(text.as_bytes(), START_MS, &mut |event| {
        events.push(event);
        ControlFlow::Continue(())
    });
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.failed, 0, "{:?}", report.issues);
    events
}

/// Equal texts, or a failure that shows the first line that differs.
fn assert_same_lines(expected: &str, actual: &str) {
    if expected == actual {
        return;
    }
    for (index, (left, right)) in expected.lines().zip(actual.lines()).enumerate() {
        assert_eq!(left, right, "line {} differs", index + 1);
    }
    panic!(
        "{} lines expected, {} exported",
        expected.lines().count(),
        actual.lines().count()
    );
}

async fn aggregates(store: &SqliteStore) -> Vec<String> {
    let rows = store
        .groups(GroupRequest {
            scope: Scope::time_only(0, i64::MAX),
            identity: true,
            timeline: None,
        })
        .await
        .expect("groups");
    let mut rows: Vec<String> = rows.iter().map(|row| format!("{row:?}")).collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn export_import_export_is_byte_identical_with_identical_aggregates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = open(&dir, "source.sqlite").await;
    let events = corpus(3_000);
    assert_eq!(
        store(&source, events, BatchOrigin::Collector("http://cpa".into())).await,
        (3_000, 0)
    );
    let (total, first) = export(&source, EventSelection::default(), ExportFormat::Jsonl).await;
    assert_eq!(total, 3_000);
    assert_eq!(first.lines().count(), 3_000);
    assert!(
        !first.contains("192.0.2.10"),
        "client IPs never leave the database"
    );
    assert!(
        !first.contains("codex_cli_rs"),
        "user agents never leave the database"
    );
    assert!(first.contains("\"response_metadata\":{"));

    let target = open(&dir, "target.sqlite").await;
    assert_eq!(
        store(&target, import(&first), BatchOrigin::Import).await,
        (3_000, 0)
    );
    let (_, second) = export(&target, EventSelection::default(), ExportFormat::Jsonl).await;
    assert_same_lines(&first, &second);
    assert_eq!(aggregates(&source).await, aggregates(&target).await);

    // The same file again adds nothing.
    assert_eq!(
        store(&target, import(&first), BatchOrigin::Import).await,
        (0, 3_000)
    );
    let (_, csv) = export(&target, EventSelection::default(), ExportFormat::Csv).await;
    assert!(csv.starts_with("request_id,event_hash,timestamp_ms,"));
}

#[tokio::test]
async fn a_stream_sees_one_snapshot_while_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = open(&dir, "live.sqlite").await;
    let events = corpus(4_000);
    let (early, late) = events.split_at(2_500);
    store(
        &live,
        early.to_vec(),
        BatchOrigin::Collector("http://cpa".into()),
    )
    .await;
    let mut pages = live
        .open_event_stream(EventSelection::default())
        .await
        .expect("open");
    let first = pages.next_page().await.expect("first page");
    // Written after the stream opened, including events older than its position.
    store(
        &live,
        late.to_vec(),
        BatchOrigin::Collector("http://cpa".into()),
    )
    .await;
    let mut seen = first.len();
    let mut previous = (i64::MIN, i64::MIN);
    for event in &first {
        assert!((event.timestamp_ms, event.id) > previous);
        previous = (event.timestamp_ms, event.id);
    }
    loop {
        let page = pages.next_page().await.expect("page");
        if page.is_empty() {
            break;
        }
        for event in &page {
            assert!((event.timestamp_ms, event.id) > previous, "oldest first");
            previous = (event.timestamp_ms, event.id);
        }
        seen += page.len();
    }
    assert_eq!(pages.total(), 2_500);
    assert_eq!(seen, 2_500);
}

#[tokio::test]
async fn an_export_sees_one_snapshot_while_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = open(&dir, "live.sqlite").await;
    let events = corpus(4_000);
    let (early, late) = events.split_at(2_500);
    store(
        &live,
        early.to_vec(),
        BatchOrigin::Collector("http://cpa".into()),
    )
    .await;
    let mut export = live
        .open_export(EventSelection::default(), ExportFormat::Jsonl)
        .await
        .expect("open");
    let mut text = export
        .next_chunk()
        .await
        .expect("chunk")
        .expect("a first chunk");
    // Written after the export opened, with new models and credentials.
    store(
        &live,
        late.to_vec(),
        BatchOrigin::Collector("http://cpa".into()),
    )
    .await;
    while let Some(chunk) = export.next_chunk().await.expect("chunk") {
        text.push_str(&chunk);
    }
    assert_eq!(export.total(), 2_500);
    let hashes: Vec<&str> = early
        .iter()
        .map(|event| event.event_hash.as_str())
        .collect();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2_500);
    for hash in hashes {
        assert!(text.contains(hash), "{hash} exported");
    }

    // An export dropped half way ends its snapshot: writes and checkpoints go on.
    let export = live
        .open_export(EventSelection::default(), ExportFormat::Csv)
        .await
        .expect("open");
    drop(export);
    assert_eq!(
        store(&live, corpus(4_100)[4_000..].to_vec(), BatchOrigin::Import).await,
        (100, 0)
    );
}

#[tokio::test]
async fn selections_filter_by_time_model_key_and_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = open(&dir, "filters.sqlite").await;
    let events = corpus(1_000);
    let models: Vec<String> = events
        .iter()
        .map(|event| {
            cpamp_domain::analytics::analytics_model(
                event.requested_model.as_deref().unwrap_or(&event.model),
            )
            .to_string()
        })
        .collect();
    let key = events
        .iter()
        .find_map(|event| event.api_key_hash.clone())
        .expect("a client key");
    store(
        &live,
        events.clone(),
        BatchOrigin::Collector("http://cpa".into()),
    )
    .await;

    let from_ms = START_MS + 100 * STEP_MS;
    let to_ms = START_MS + 300 * STEP_MS;
    let (total, text) = export(
        &live,
        EventSelection {
            from_ms: Some(from_ms),
            to_ms: Some(to_ms),
            ..EventSelection::default()
        },
        ExportFormat::Jsonl,
    )
    .await;
    let expected = events
        .iter()
        .filter(|event| event.timestamp_ms >= from_ms && event.timestamp_ms < to_ms)
        .count();
    assert_eq!((total as usize, text.lines().count()), (expected, expected));

    let wanted = models[0].clone();
    let (total, _) = export(
        &live,
        EventSelection {
            models: vec![wanted.clone()],
            ..EventSelection::default()
        },
        ExportFormat::Jsonl,
    )
    .await;
    assert_eq!(
        total as usize,
        models.iter().filter(|model| **model == wanted).count()
    );

    let (total, _) = export(
        &live,
        EventSelection {
            api_key_hashes: vec![key.to_uppercase()],
            ..EventSelection::default()
        },
        ExportFormat::Jsonl,
    )
    .await;
    let expected = events
        .iter()
        .filter(|event| event.api_key_hash.as_deref() == Some(key.as_str()))
        .count();
    assert_eq!(total as usize, expected);

    let (total, text) = export(
        &live,
        EventSelection {
            newest: Some(10),
            ..EventSelection::default()
        },
        ExportFormat::Jsonl,
    )
    .await;
    assert_eq!(total, 10);
    let last = events.last().expect("events");
    assert!(
        text.lines()
            .last()
            .expect("line")
            .contains(&last.event_hash)
    );
    assert!(
        text.lines()
            .next()
            .expect("line")
            .contains(&events[990].event_hash)
    );

    let mut pages = live
        .open_event_stream(EventSelection {
            newest: Some(3),
            order: StreamOrder::NewestFirst,
            ..EventSelection::default()
        })
        .await
        .expect("open");
    let page = pages.next_page().await.expect("page");
    assert_eq!(page.len(), 3);
    assert_eq!(page[0].event_hash, last.event_hash);
    let (total, text) = export(
        &live,
        EventSelection {
            newest: Some(3),
            order: StreamOrder::NewestFirst,
            ..EventSelection::default()
        },
        ExportFormat::Csv,
    )
    .await;
    assert_eq!(total, 3);
    assert!(
        text.lines()
            .nth(1)
            .expect("first row")
            .contains(&last.event_hash)
    );

    let (total, text) = export(
        &live,
        EventSelection {
            models: vec!["no-such-model".into()],
            ..EventSelection::default()
        },
        ExportFormat::Jsonl,
    )
    .await;
    assert_eq!((total, text.as_str()), (0, ""));
}

#[tokio::test]
async fn backups_are_consistent_private_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = open(&dir, "live.sqlite").await;
    store(
        &live,
        corpus(800),
        BatchOrigin::Collector("http://cpa".into()),
    )
    .await;
    let path = dir.path().join("copy.sqlite");
    let facts = live.backup_into(&path).await.expect("backup");
    assert_eq!(facts.events, 800);
    assert!(facts.schema_version > 0);
    assert_eq!(facts.bytes, std::fs::metadata(&path).expect("copy").len());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("copy").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never overwrites.
    assert!(live.backup_into(&path).await.is_err());
    assert!(path.exists());

    // The copy opens as a store with the same data.
    let copy = SqliteStore::open(Options::new(&path))
        .await
        .expect("open copy");
    assert_eq!(aggregates(&copy).await, aggregates(&live).await);
}

/// `line` without the keys cpamp exports beyond the Go server's field set.
fn go_fields_only(line: &str) -> String {
    let mut line = line.to_string();
    for key in [
        "request_service_tier",
        "response_service_tier",
        "cache_input_mode",
    ] {
        let needle = format!(",\"{key}\":\"");
        if let Some(start) = line.find(&needle) {
            let value_start = start + needle.len();
            let end = value_start + line[value_start..].find('"').expect("closing quote") + 1;
            line.replace_range(start..end, "");
        }
    }
    line
}

#[tokio::test]
async fn a_go_server_export_imports_losslessly() {
    let fixture = include_str!("../../domain/tests/fixtures/go/usage-export.jsonl");
    let dir = tempfile::tempdir().expect("tempdir");
    let target = open(&dir, "from-go.sqlite").await;
    let events = import(fixture);
    let count = fixture.lines().count() as u64;
    assert_eq!(
        store(&target, events, BatchOrigin::Import).await,
        (count, 0)
    );
    let (_, exported) = export(&target, EventSelection::default(), ExportFormat::Jsonl).await;
    // Exports are oldest first; the fixture is in collection order.
    let mut expected: Vec<&str> = fixture.lines().collect();
    let mut actual: Vec<String> = exported.lines().map(go_fields_only).collect();
    expected.sort();
    actual.sort();
    for (expected, actual) in expected.iter().zip(&actual) {
        assert_eq!(expected, actual);
    }
    assert_eq!(expected.len(), actual.len());
    // Our own fields are there, derived the way an import derives them.
    assert!(exported.contains("\"cache_input_mode\":\"separate_from_input\""));
    assert_eq!(
        store(&target, import(fixture), BatchOrigin::Import).await,
        (0, count)
    );
}
