//! The reference CPA payloads through the real decoder into a real database file:
//! every good payload is stored exactly once however often it arrives, and every
//! malformed one becomes exactly one dead letter with its reason.

use cpamp_domain::decode::decode;
use cpamp_domain::event::Decoded;
use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch, StoreStats};
use cpamp_storage::{Options, SqliteStore};

const GOOD: &[u8] = include_bytes!("../../domain/tests/fixtures/cpa/usage-events.jsonl");
const MALFORMED: &[u8] = include_bytes!("../../domain/tests/fixtures/cpa/malformed.jsonl");
const NOW_MS: i64 = 1_767_225_600_000;

fn batch_of(file: &[u8]) -> IngestBatch {
    let mut batch = IngestBatch {
        origin: BatchOrigin::Collector("http://127.0.0.1:8317".into()),
        events: Vec::new(),
        dead_letters: Vec::new(),
    };
    for line in file.split(|byte| *byte == b'\n') {
        match decode(line, NOW_MS) {
            Decoded::Event(event) => batch.events.push(*event),
            Decoded::Dead(dead_letter) => batch.dead_letters.push(dead_letter),
            Decoded::Blank | Decoded::Refresh | Decoded::SupportRefresh => {}
        }
    }
    batch
}

#[tokio::test]
async fn reference_payloads_are_stored_once_and_bad_ones_are_dead_lettered() {
    let directory = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(Options::new(directory.path().join("usage.sqlite")))
        .await
        .expect("open");

    let good = batch_of(GOOD);
    assert_eq!(good.events.len(), 40);
    assert!(good.dead_letters.is_empty());
    let first = store
        .store_batch(good.clone())
        .await
        .expect("first delivery");
    assert_eq!((first.inserted, first.skipped), (40, 0));
    // CPA retries and a manager restart can deliver the same payloads again.
    let again = store.store_batch(good).await.expect("second delivery");
    assert_eq!((again.inserted, again.skipped), (0, 40));

    let malformed = batch_of(MALFORMED);
    let expected_dead = malformed.dead_letters.len();
    assert!(expected_dead >= 20, "{expected_dead}");
    assert!(
        malformed
            .dead_letters
            .iter()
            .all(|dead| !dead.reason.is_empty())
    );
    let outcome = store.store_batch(malformed).await.expect("malformed batch");
    assert_eq!(outcome.dead_lettered as usize, expected_dead);

    let counts = store.counts().await.expect("counts");
    assert_eq!(counts.events as u64, 40 + outcome.inserted);
    assert_eq!(counts.dead_letters as usize, expected_dead);
    store.close().await;
}
