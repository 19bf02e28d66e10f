//! Collection gaps, the collector heartbeat and the database file report.

use cpamp_domain::ports::{DatabaseStats, GapCause, GapStore};
use cpamp_storage::{JOURNAL_SIZE_LIMIT_BYTES, Options, SqliteStore};

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
