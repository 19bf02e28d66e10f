//! The automation tables on a real SQLite file: cooldowns extend instead of duplicating
//! and end once; candidates keep one pending row per credential and reason; the audit
//! log pages newest first; ended rows are pruned by age.

use cpamp_domain::automation::store::{
    AuditEntry, AuditQuery, AuditStore, CandidateHit, CandidateStore, CooldownEnd, CooldownStore,
    NewCooldown,
};
use cpamp_storage::{Options, SqliteStore};

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let directory = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(Options::new(directory.path().join("usage.sqlite")))
        .await
        .expect("open");
    (directory, store)
}

fn cooldown(index: &str, recover_at_ms: i64) -> NewCooldown {
    NewCooldown {
        auth_file_name: "codex-a.json".into(),
        auth_index: index.into(),
        account_snapshot: "a@example.com".into(),
        provider: "codex".into(),
        owner: "cpamp_usage_429".into(),
        reason_code: "codex_usage_limit_reached".into(),
        window_kind: "five_hour".into(),
        evidence_json: String::new(),
        recover_at_ms,
        event_hash: format!("hash-{recover_at_ms}"),
        disabled_at_ms: 1_000,
    }
}

#[tokio::test]
async fn cooldowns_extend_end_once_and_prune() {
    let (_directory, store) = open().await;
    let first = store
        .upsert_cooldown(cooldown("", 10_000), 1)
        .await
        .expect("insert");
    // The same account with its auth index now known: the row is upgraded and extended.
    let second = store
        .upsert_cooldown(cooldown("11", 20_000), 2)
        .await
        .expect("extend");
    assert_eq!(second.id, first.id);
    assert_eq!(second.auth_index, "11");
    assert_eq!(second.recover_at_ms, 20_000);
    assert_eq!(second.event_hash, "hash-20000");
    // An earlier reset never shortens it.
    let third = store
        .upsert_cooldown(cooldown("11", 15_000), 3)
        .await
        .expect("keep");
    assert_eq!((third.id, third.recover_at_ms), (first.id, 20_000));
    // Another credential of the same file is its own cooldown.
    let other = store
        .upsert_cooldown(cooldown("22", 12_000), 4)
        .await
        .expect("other");
    assert_ne!(other.id, first.id);

    let active = store.active_cooldowns().await.expect("active");
    assert_eq!(
        active.iter().map(|row| row.id).collect::<Vec<_>>(),
        [other.id, first.id],
        "soonest first"
    );
    let due = store.due_cooldowns(12_000, 100).await.expect("due");
    assert_eq!(due.len(), 1);
    assert!(
        store
            .end_cooldown(other.id, CooldownEnd::Recovered, "", 13_000)
            .await
            .expect("end")
    );
    assert!(
        !store
            .end_cooldown(other.id, CooldownEnd::Released, "", 13_001)
            .await
            .expect("again")
    );
    store
        .record_cooldown_error(first.id, "CPA unreachable", 14_000)
        .await
        .expect("error");
    let active = store.active_cooldowns().await.expect("active");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].last_error, "CPA unreachable");

    // After it ended, the same credential can start a new cooldown.
    assert!(
        store
            .end_cooldown(first.id, CooldownEnd::Released, "manual", 21_000)
            .await
            .expect("end")
    );
    let again = store
        .upsert_cooldown(cooldown("11", 30_000), 22_000)
        .await
        .expect("new");
    assert_ne!(again.id, first.id);
    assert_eq!(store.prune_cooldowns(21_500).await.expect("prune"), 2);
    assert_eq!(store.active_cooldowns().await.expect("active").len(), 1);
}

fn hit(index: &str, reason: &str, seen_at_ms: i64) -> CandidateHit {
    CandidateHit {
        action_type: "reauth".into(),
        provider: "codex".into(),
        auth_file_name: "codex-b.json".into(),
        auth_index: index.into(),
        account_snapshot: "b@example.com".into(),
        account_id_snapshot: String::new(),
        auth_label: "B".into(),
        reason_code: reason.into(),
        reason: "reauthorize".into(),
        auto_disable_eligible: reason == "token_revoked",
        evidence_json: format!(r#"{{"seen":{seen_at_ms}}}"#),
        seen_at_ms,
    }
}

#[tokio::test]
async fn one_pending_candidate_per_credential_and_reason() {
    let (_directory, store) = open().await;
    let first = store
        .record_candidate_hit(hit("", "token_revoked", 100), 1)
        .await
        .expect("new");
    let second = store
        .record_candidate_hit(hit("77", "token_revoked", 300), 2)
        .await
        .expect("hit");
    assert_eq!(
        second.id, first.id,
        "the richer identity merges into the row"
    );
    assert_eq!((second.hit_count, second.auth_index.as_str()), (2, "77"));
    // An older sighting never moves the last one back.
    let third = store
        .record_candidate_hit(hit("77", "token_revoked", 200), 3)
        .await
        .expect("hit");
    assert_eq!((third.hit_count, third.last_seen_at_ms), (3, 300));
    let other = store
        .record_candidate_hit(hit("77", "invalid_credentials", 400), 4)
        .await
        .expect("other reason");
    assert_ne!(other.id, first.id);

    let (items, pending) = store.candidates(Some("pending"), 10).await.expect("list");
    assert_eq!((items.len(), pending), (2, 2));
    assert_eq!(items[0].id, other.id, "newest sighting first");

    let ignored = store
        .finish_candidate(first.id, "ignored", 5)
        .await
        .expect("ignore");
    assert_eq!(ignored.map(|row| row.status), Some("ignored".to_string()));
    assert_eq!(
        store
            .finish_candidate(first.id, "resolved", 6)
            .await
            .expect("again"),
        None
    );
    // A failure after "ignore" opens a new pending candidate.
    let reopened = store
        .record_candidate_hit(hit("77", "token_revoked", 500), 7)
        .await
        .expect("new");
    assert_ne!(reopened.id, first.id);
    let (all, pending) = store.candidates(None, 10).await.expect("all");
    assert_eq!((all.len(), pending), (3, 2));
    assert_eq!(
        all.last().map(|row| row.status.as_str()),
        Some("ignored"),
        "pending first"
    );

    store
        .mark_candidate_auto_disabled(reopened.id, 8)
        .await
        .expect("mark");
    store
        .set_candidate_error(reopened.id, "CPA said no", 9)
        .await
        .expect("error");
    let row = store
        .candidate(reopened.id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        (row.auto_disabled_at_ms, row.last_error.as_str()),
        (Some(8), "CPA said no")
    );
    assert_eq!(store.prune_candidates(6).await.expect("prune"), 1);
}

#[tokio::test]
async fn the_audit_log_pages_newest_first() {
    let (_directory, store) = open().await;
    for (at_ms, actor) in [
        (1, "quota_cooldown"),
        (2, "operator"),
        (3, "quota_cooldown"),
    ] {
        store
            .append_audit(AuditEntry {
                at_ms,
                actor: actor.into(),
                action: "disable".into(),
                auth_file_name: "a.json".into(),
                outcome: "ok".into(),
                ..AuditEntry::default()
            })
            .await
            .expect("append");
    }
    let cooldown = store
        .audit_entries(AuditQuery {
            actor: Some("quota_cooldown".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(
        cooldown.iter().map(|entry| entry.at_ms).collect::<Vec<_>>(),
        [3, 1]
    );
    let page = store
        .audit_entries(AuditQuery {
            before_id: Some(cooldown[0].id),
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .expect("page");
    assert_eq!(page[0].actor, "operator");
    assert_eq!(store.prune_audit(3).await.expect("prune"), 2);
}

#[tokio::test]
async fn one_inspection_run_holds_the_lease_at_a_time() {
    use cpamp_domain::automation::runs::{InspectionStore, NewRun, StartRefusal};
    let (_directory, store) = open().await;
    let run = |key: &str| NewRun {
        trigger_type: if key.is_empty() {
            "manual"
        } else {
            "scheduled"
        }
        .into(),
        trigger_key: key.into(),
        settings_json: "{}".into(),
        owner_id: "host:1".into(),
    };
    let first = store
        .begin_run(run(""), 1_000, 30_000)
        .await
        .expect("begin")
        .expect("started");
    assert_eq!(first.status, "running");
    assert_eq!(
        store
            .begin_run(run(""), 2_000, 30_000)
            .await
            .expect("begin"),
        Err(StartRefusal::AlreadyRunning)
    );
    assert!(
        store
            .renew_lease(first.id, "host:1", 20_000, 30_000)
            .await
            .expect("renew")
    );
    assert!(
        !store
            .renew_lease(first.id, "other:2", 20_000, 30_000)
            .await
            .expect("renew")
    );
    // The owner vanished: once the lease expires a new run may start, and the old one
    // is marked interrupted.
    let second = store
        .begin_run(run("interval:60:1"), 60_000, 30_000)
        .await
        .expect("begin")
        .expect("started");
    let old = store.run(first.id).await.expect("read").expect("run");
    assert_eq!(old.status, "interrupted");
    assert!(!old.error.is_empty());
    let mut finished = second.clone();
    finished.status = "completed".into();
    finished.finished_at_ms = Some(61_000);
    store.finish_run(finished).await.expect("finish");
    assert_eq!(
        store.lease().await.expect("lease"),
        None,
        "finishing releases the lease"
    );
    assert_eq!(
        store
            .begin_run(run("interval:60:1"), 62_000, 30_000)
            .await
            .expect("begin"),
        Err(StartRefusal::TriggerHandled)
    );
    let third = store
        .begin_run(run(""), 63_000, 30_000)
        .await
        .expect("begin")
        .expect("started");
    assert_eq!(
        store.interrupt_stale_runs(64_000).await.expect("recover"),
        Vec::<i64>::new()
    );
    assert_eq!(
        store.interrupt_stale_runs(i64::MAX).await.expect("recover"),
        vec![third.id]
    );
    let ids: Vec<i64> = store
        .runs(10)
        .await
        .expect("runs")
        .iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(ids, [third.id, second.id, first.id]);
    assert_eq!(store.prune_runs(1, 0).await.expect("prune"), 2);
}

/// An audit entry whose commit the file system refuses (the WAL cannot be written, as on
/// a full disk) is an error, never an id for a row SQLite rolled back.
#[tokio::test]
async fn an_audit_entry_refused_at_commit_is_an_error() {
    let (directory, store) = open().await;
    let entry = || AuditEntry {
        at_ms: 5,
        actor: "operator".into(),
        action: "disable".into(),
        auth_file_name: "a.json".into(),
        outcome: "ok".into(),
        ..AuditEntry::default()
    };
    store.append_audit(entry()).await.expect("append");
    let wal = directory.path().join("usage.sqlite-wal");
    let refused = {
        let _read_only = cpamp_testkit::ReadOnlyFiles::set(vec![wal]);
        store.append_audit(entry()).await
    };
    assert!(refused.is_err(), "reported as written: {refused:?}");
    let id = store.append_audit(entry()).await.expect("append again");
    let entries = store
        .audit_entries(AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].id, id);
}
