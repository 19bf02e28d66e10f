//! Collection gaps, the collector heartbeat and the database file report.

use cpamp_domain::ports::{DatabaseStats, GapCause, GapStore};
use cpamp_storage::{JOURNAL_SIZE_LIMIT_BYTES, Options, SqliteStore};

mod support;

#[tokio::test]
async fn gaps_open_once_close_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");

    assert_eq!(store.last_heartbeat().await.expect("heartbeat"), None);
    store.heartbeat(1_000).await.expect("beat");
    store.heartbeat(900).await.expect("older beat is ignored");
    assert_eq!(
        store.last_heartbeat().await.expect("heartbeat"),
        Some(1_000)
    );

    let first = store
        .open_gap(1_000, GapCause::ServerDown, "server was not running")
        .await
        .expect("open");
    // A second open while one is open returns the same gap: gaps never overlap.
    let again = store
        .open_gap(2_000, GapCause::CpaUnreachable, "connect refused")
        .await
        .expect("open again");
    assert_eq!(first, again);
    store.close_open_gaps(5_000).await.expect("close");

    let second = store
        .open_gap(8_000, GapCause::StoreFailed, "database is locked")
        .await
        .expect("open second");
    assert_ne!(first, second);

    let gaps = store.gaps(0, i64::MAX, 10).await.expect("gaps");
    assert_eq!(gaps.len(), 2);
    assert_eq!(gaps[0].id, second);
    assert_eq!(gaps[0].end_ms, None);
    assert_eq!(gaps[0].cause, GapCause::StoreFailed);
    assert_eq!(gaps[1].start_ms, 1_000);
    assert_eq!(gaps[1].end_ms, Some(5_000));
    assert_eq!(gaps[1].cause, GapCause::ServerDown);

    // Range filter: only gaps overlapping [6000, 7000] — none; [4000, 4500] — the first.
    assert!(store.gaps(6_000, 7_000, 10).await.expect("gaps").is_empty());
    let overlapping = store.gaps(4_000, 4_500, 10).await.expect("gaps");
    assert_eq!(overlapping.len(), 1);
    assert_eq!(overlapping[0].id, first);

    // A close before the start never produces a negative gap.
    store.close_open_gaps(7_000).await.expect("close early");
    let gaps = store.gaps(0, i64::MAX, 10).await.expect("gaps");
    assert_eq!(gaps[0].end_ms, Some(8_000));

    store.close().await;
    let reopened = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    assert_eq!(reopened.gaps(0, i64::MAX, 10).await.expect("gaps").len(), 2);
    assert_eq!(reopened.last_heartbeat().await.expect("beat"), Some(1_000));
}

#[tokio::test]
async fn the_database_report_reads_file_sizes_and_the_last_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(Options::new(dir.path().join("usage.sqlite")))
        .await
        .expect("open");
    let before = store.database_report().await.expect("report");
    assert_eq!(before.checkpoint.mode, "pending");
    assert!(before.database_bytes > 0);
    assert_eq!(before.journal_size_limit_bytes, JOURNAL_SIZE_LIMIT_BYTES);

    store.heartbeat(42).await.expect("a write to checkpoint");
    let run = store.run_wal_maintenance().await;
    assert_eq!(run.mode, "passive");
    assert_eq!(run.error, None);
    assert_eq!(run.busy, 0);
    assert_eq!(run.checkpointed_frames, run.log_frames);
    assert!(run.executed_at_ms > 0);

    let after = store.database_report().await.expect("report");
    assert_eq!(after.checkpoint, run);
    assert_eq!(
        after.total_bytes(),
        after.database_bytes + after.wal_bytes + after.shm_bytes
    );
}

/// A gap whose commit the file system refuses (the WAL cannot be written, as on a full
/// disk, where the frames are written at commit) is reported as refused, so the tracker
/// keeps it and retries; it is never reported as recorded while SQLite rolled it back.
#[tokio::test]
async fn a_gap_refused_at_commit_is_an_error_not_a_lost_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    store.heartbeat(1_000).await.expect("beat");
    let wal = dir.path().join("usage.sqlite-wal");
    assert!(wal.exists(), "the database runs in WAL mode");

    let refused = {
        let _read_only = cpamp_testkit::ReadOnlyFiles::set(vec![wal.clone()]);
        store
            .open_gap(
                2_000,
                GapCause::StoreFailed,
                "consume: database or disk is full",
            )
            .await
    };
    assert!(refused.is_err(), "reported as recorded: {refused:?}");
    assert!(store.gaps(0, i64::MAX, 10).await.expect("gaps").is_empty());

    let id = store
        .open_gap(
            2_000,
            GapCause::StoreFailed,
            "consume: database or disk is full",
        )
        .await
        .expect("recorded once the file takes writes");
    let gaps = store.gaps(0, i64::MAX, 10).await.expect("gaps");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].id, gaps[0].start_ms), (id, 2_000));
    store.close().await;
}

/// The gaps the table holds, read with SQL on a connection of their own.
async fn gaps_in_sql(
    path: &std::path::Path,
    from_ms: i64,
    to_ms: i64,
    limit: u32,
) -> Vec<(i64, i64, Option<i64>)> {
    use sqlx::{ConnectOptions, Connection};
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .expect("read connection");
    let rows = sqlx::query_as(
        "SELECT id, start_ms, end_ms FROM collection_gaps \
         WHERE start_ms <= ? AND (end_ms IS NULL OR end_ms >= ?) \
         ORDER BY start_ms DESC, id DESC LIMIT ?",
    )
    .bind(to_ms)
    .bind(from_ms)
    .bind(i64::from(limit))
    .fetch_all(&mut connection)
    .await
    .expect("read gaps");
    connection.close().await.expect("close");
    rows
}

/// Gaps are answered from a copy while the table is small (so `/status` and panels
/// take no read connection), and from SQL once it is not; either way every answer is
/// the one SQL gives, right after each open and close.
#[tokio::test]
async fn gap_answers_match_sql_across_writes_and_table_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    let ranges = [
        (i64::MIN, i64::MAX, 1_000),
        (0, i64::MAX, 20),
        (150_000, 400_000, 50),
        (1_000_000, 1_000_000, 5),
        (-5, 5, 10),
    ];
    let check = |label: String| {
        let (store, path) = (store.clone(), path.clone());
        async move {
            for (from, to, limit) in ranges {
                let answered: Vec<(i64, i64, Option<i64>)> = store
                    .gaps(from, to, limit)
                    .await
                    .expect("gaps")
                    .into_iter()
                    .map(|gap| (gap.id, gap.start_ms, gap.end_ms))
                    .collect();
                assert_eq!(
                    answered,
                    gaps_in_sql(&path, from, to, limit).await,
                    "{label}: gaps({from}, {to}, {limit})"
                );
            }
        }
    };
    check("empty".to_string()).await;
    // Past the kept copy's 1,000 rows, with a read after every open and close.
    for index in 0..1_100i64 {
        let start = index * 1_000;
        store
            .open_gap(start, GapCause::CpaUnreachable, "connect refused")
            .await
            .expect("open");
        if index % 97 == 0 || (995..1_005).contains(&index) {
            check(format!("gap {index} open")).await;
        }
        store.close_open_gaps(start + 400).await.expect("close");
        if index % 97 == 0 || (995..1_005).contains(&index) {
            check(format!("gap {index} closed")).await;
        }
    }
    store
        .open_gap(2_000_000, GapCause::StoreFailed, "disk full")
        .await
        .expect("open the last");
    check("open at the end".to_string()).await;
    store.close().await;
}

/// Counts are read once and then kept current by every committed batch: what
/// `counts` says is what the `counters` table holds, batch after batch.
#[tokio::test]
async fn counts_follow_every_committed_batch() {
    use cpamp_domain::ports::{BatchOrigin, EventSink, IngestBatch, StoreStats};
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usage.sqlite");
    let store = SqliteStore::open(Options::new(&path)).await.expect("open");
    let events = support::synth::events(7, 300, 1_787_400_000_000, 2);
    let in_sql = || async {
        let mut connection = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .connect()
            .await
            .expect("read connection");
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT name, value FROM counters")
            .fetch_all(&mut connection)
            .await
            .expect("counters");
        connection.close().await.expect("close");
        let value = |name: &str| {
            rows.iter()
                .find(|(row, _)| row == name)
                .map_or(0, |(_, value)| *value)
        };
        (value("usage_events"), value("dead_letter_events"))
    };
    let counted = |counts: cpamp_domain::ports::StoreCounts| (counts.events, counts.dead_letters);
    assert_eq!(counted(store.counts().await.expect("counts")), (0, 0));
    for (round, chunk) in events.chunks(100).enumerate() {
        // Each batch repeats the previous one's events (skipped as duplicates) and
        // carries a dead letter.
        let mut batch_events = chunk.to_vec();
        if round > 0 {
            batch_events.extend_from_slice(&events[(round - 1) * 100..round * 100]);
        }
        store
            .store_batch(IngestBatch {
                origin: BatchOrigin::Collector("http://cpa".to_string()),
                events: batch_events,
                dead_letters: vec![cpamp_domain::event::DeadLetter {
                    payload: format!("not json {round}"),
                    reason: "not a payload".to_string(),
                    created_at_ms: 1_787_400_000_000,
                }],
            })
            .await
            .expect("store");
        let counts = counted(store.counts().await.expect("counts"));
        assert_eq!(counts, in_sql().await, "after batch {round}");
        assert_eq!(counts, (100 * (round as i64 + 1), round as i64 + 1));
    }
    store.close().await;
    let reopened = SqliteStore::open(Options::new(&path))
        .await
        .expect("reopen");
    assert_eq!(counted(reopened.counts().await.expect("counts")), (300, 3));
}
