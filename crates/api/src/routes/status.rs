//! `GET /status` (admin key): what the server is doing, with a diagnosis (server-core
//! §3.9), and `GET /v0/management/collector-gaps` for the panel's charts.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use cpamp_collector::CollectorStatus;
use cpamp_domain::ports::{CollectionGap, DatabaseReport};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::AdminAuth;
use crate::doctor::{self, CpaTarget, Diagnosis, DoctorInput};
use crate::error::{ApiError, ErrorCode};
use crate::monitor::{CollectorPlan, Monitor};
use crate::state::{AppState, Store};

/// How long a diagnosis is reused: the panel polls `/status`, CPA should not be probed
/// on every poll. An older one is still answered while its successor is made.
const DIAGNOSIS_MAX_AGE: Duration = Duration::from_secs(5);
/// Gaps shown in `/status`.
const STATUS_GAPS: u32 = 20;
/// Most gaps one `collector-gaps` call returns.
const MAX_GAPS: u32 = 1000;

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/status")
                .route(web::get().to(status::<S>))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/v0/management/collector-gaps")
                .route(web::get().to(collector_gaps::<S>))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed())
}

#[derive(Debug, Deserialize)]
struct StatusQuery {
    scope: Option<String>,
}

/// cpamp builds every index inside its migrations and has no offline jobs, so the
/// database never needs a maintenance step.
fn database_maintenance() -> Value {
    json!({
        "required": false,
        "performanceDegraded": false,
        "deferredIndexes": 0,
        "offlineJobs": 0,
        "reasons": [],
    })
}

async fn status<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
    monitor: web::Data<Monitor>,
    query: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.scope.as_deref() == Some("database-maintenance") {
        return Ok(
            HttpResponse::Ok().json(json!({ "databaseMaintenance": database_maintenance() }))
        );
    }
    let counts = state.store.counts().await?;
    let collector = state.collector.status().snapshot();
    let database = state.store.database_report().await?;
    let now = now_ms();
    let gaps = state.store.gaps(i64::MIN, i64::MAX, STATUS_GAPS).await?;
    let unrecorded = state.gaps.unrecorded();
    let diagnosis = match monitor.cached_diagnosis(DIAGNOSIS_MAX_AGE) {
        Some(fresh) => fresh,
        // An older diagnosis is answered at once while a new one is made in the
        // background (it may probe CPA), so no `/status` waits for it but the first.
        None => match monitor.last_diagnosis() {
            Some(older) => {
                if monitor.begin_refresh() {
                    let (state, monitor) = (state.clone(), monitor.clone());
                    actix_web::rt::spawn(async move {
                        let _claim = RefreshClaim(monitor.clone());
                        if let Err(error) = diagnosis(&state, &monitor, None).await {
                            tracing::warn!(%error, "refreshing the diagnosis failed");
                        }
                    });
                }
                older
            }
            None => diagnosis(&state, &monitor, None).await?,
        },
    };
    Ok(HttpResponse::Ok().json(json!({
        "service": "cpa-manager-plus",
        "dbPath": state.db_path,
        "events": counts.events,
        "eventCount": counts.events,
        "deadLetters": counts.dead_letters,
        "collector": collector_json(&collector, counts.dead_letters),
        "dataMigration": {
            "name": "usage_cache_accounting_v2",
            "status": "completed",
            "lastEventId": 0,
            "targetEventId": 0,
            "processedRows": 0,
            "changedRows": 0,
            "appliedRows": 0,
            "updatedAtMs": state.started_at_ms,
            "finishedAtMs": state.started_at_ms,
        },
        "databaseMaintenance": database_maintenance(),
        "database": database_json(&database),
        "gaps": gaps_json(&unrecorded, &gaps, now),
        "diagnosis": diagnosis,
    })))
}

/// Ends a background refresh of the diagnosis however it ends.
struct RefreshClaim(web::Data<Monitor>);

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        self.0.refreshed();
    }
}

/// Runs (or reuses) the doctor for the live server. `connection` overrides the resolved
/// one (used by tests of the route table).
pub async fn diagnosis<S: Store>(
    state: &AppState<S>,
    monitor: &Monitor,
    connection: Option<CpaTarget>,
) -> Result<Diagnosis, ApiError> {
    if let Some(cached) = monitor.cached_diagnosis(DIAGNOSIS_MAX_AGE) {
        return Ok(cached);
    }
    let effective = crate::manager_config::load(state).await?;
    let connection = connection.or_else(|| {
        effective.is_connected().then(|| CpaTarget {
            base_url: effective.base_url.clone(),
            management_key: effective.management_key.clone(),
        })
    });
    let plan = CollectorPlan {
        mode: effective.collector.mode.as_str().to_string(),
        poll_interval: Duration::from_millis(effective.collector.poll_interval_ms),
        enabled: crate::connection::collector_settings(&effective).is_some(),
    };
    let input = DoctorInput {
        connection,
        collector: Some(state.collector.status().snapshot()),
        plan,
        host: monitor.host.clone(),
        counts: state.store.counts().await?,
        gaps: {
            let mut gaps = state.gaps.unrecorded();
            gaps.extend(state.store.gaps(i64::MIN, i64::MAX, 50).await?);
            gaps
        },
        automation: doctor::automation_facts(&state.store).await?,
        now_ms: now_ms(),
    };
    let (diagnosis, facts) = doctor::diagnose(&input).await;
    if facts.retention_secs.is_some() || facts.version.is_some() {
        monitor.set_cpa_facts(facts);
    }
    monitor.store_diagnosis(diagnosis.clone());
    Ok(diagnosis)
}

pub(crate) fn collector_json(collector: &CollectorStatus, dead_letters: i64) -> Value {
    let mut value = json!({
        "collector": collector.state.as_str(),
        "upstream": collector.upstream,
        "mode": collector.mode,
        "transport": collector.transport,
        "queue": collector.queue,
        "lastConsumedAt": collector.last_consumed_at_ms,
        "lastInsertedAt": collector.last_inserted_at_ms,
        "totalInserted": collector.total_inserted,
        "totalSkipped": collector.total_skipped,
        "totalConsumed": collector.total_consumed,
        "deadLetters": dead_letters,
        "pendingItems": collector.pending_items,
        "heldItems": collector.held_items,
        "warnings": collector.warnings,
        "note": collector.note,
    });
    if !collector.last_error.is_empty() {
        value["lastError"] = json!(collector.last_error);
    }
    if !collector.store_error.is_empty() {
        value["storeError"] = json!(collector.store_error);
    }
    value
}

fn database_json(report: &DatabaseReport) -> Value {
    let checkpoint = &report.checkpoint;
    let mut checkpoint_json = json!({
        "mode": checkpoint.mode,
        "busy": checkpoint.busy,
        "logFrames": checkpoint.log_frames,
        "checkpointedFrames": checkpoint.checkpointed_frames,
        "executedAtMs": checkpoint.executed_at_ms,
        "durationMs": checkpoint.duration_ms,
    });
    if let Some(at) = checkpoint.last_truncate_attempt_at_ms {
        checkpoint_json["lastTruncateAttemptAtMs"] = json!(at);
    }
    if let Some(error) = &checkpoint.error {
        checkpoint_json["error"] = json!(error);
    }
    json!({
        "databaseBytes": report.database_bytes,
        "walBytes": report.wal_bytes,
        "shmBytes": report.shm_bytes,
        "totalBytes": report.total_bytes(),
        "journalSizeLimitBytes": report.journal_size_limit_bytes,
        "checkpoint": checkpoint_json,
    })
}

/// One gap; `recorded` is false for a gap known only in memory so far (its row is
/// written once the store takes writes again), whose `id` is 0 (row ids start at 1).
fn gap_json(gap: &CollectionGap, recorded: bool, now_ms: i64) -> Value {
    json!({
        "id": if recorded { gap.id } else { 0 },
        "startMs": gap.start_ms,
        "endMs": gap.end_ms,
        "open": gap.end_ms.is_none(),
        "durationMs": gap.end_ms.unwrap_or(now_ms).saturating_sub(gap.start_ms),
        "cause": gap.cause.as_str(),
        "detail": gap.detail,
        "recorded": recorded,
    })
}

/// The gaps not yet written first (they are the newest), then the stored ones.
fn gaps_json(unrecorded: &[CollectionGap], stored: &[CollectionGap], now_ms: i64) -> Value {
    let all = || {
        unrecorded
            .iter()
            .map(|gap| (gap, false))
            .chain(stored.iter().map(|gap| (gap, true)))
    };
    json!({
        "open": all().any(|(gap, _)| gap.end_ms.is_none()),
        "recent": all().map(|(gap, recorded)| gap_json(gap, recorded, now_ms)).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GapQuery {
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    limit: Option<u32>,
}

/// Gaps overlapping `[startMs, endMs]` (default: all), newest first, for chart overlays.
async fn collector_gaps<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
    query: web::Query<GapQuery>,
) -> Result<HttpResponse, ApiError> {
    let from = query.start_ms.unwrap_or(i64::MIN);
    let to = query.end_ms.unwrap_or(i64::MAX);
    if from > to {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "startMs must not be after endMs",
        ));
    }
    let limit = query.limit.unwrap_or(MAX_GAPS).clamp(1, MAX_GAPS);
    let now = now_ms();
    let gaps = state.store.gaps(from, to, limit).await?;
    let unrecorded = state.gaps.unrecorded();
    let unrecorded = unrecorded
        .iter()
        .filter(|gap| gap.start_ms <= to && gap.end_ms.unwrap_or(i64::MAX) >= from)
        .map(|gap| gap_json(gap, false, now));
    let recorded = gaps.iter().map(|gap| gap_json(gap, true, now));
    Ok(HttpResponse::Ok().json(json!({
        "gaps": unrecorded.chain(recorded).take(limit as usize).collect::<Vec<_>>(),
    })))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
