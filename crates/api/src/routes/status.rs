//! `GET /status` (admin key): what the server is doing, with a diagnosis (server-core
//! §3.9), and `GET /v0/management/collector-gaps` for the panel's charts.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use cpamp_collector::CollectorStatus;
use cpamp_domain::ports::{CollectionGap, DatabaseReport};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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

async fn status<S: Store>(
    _admin: AdminAuth,
    state: web::Data<AppState<S>>,
    monitor: web::Data<Monitor>,
    query: web::Query<StatusQuery>,
) -> Result<HttpResponse, ApiError> {
    if query.scope.as_deref() == Some("database-maintenance") {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Scoped {
            database_maintenance: Maintenance,
        }
        return json_answer(&Scoped {
            database_maintenance: Maintenance::NONE,
        });
    }
    let counts = state.store.counts().await?;
    let collector = state.collector.status().snapshot();
    let database = state.store.database_report().await?;
    let now = now_ms();
    let gaps = state.store.gaps(i64::MIN, i64::MAX, STATUS_GAPS).await?;
    let unrecorded = state.gaps.unrecorded();
    let diagnosis = match monitor.cached_diagnosis_json(DIAGNOSIS_MAX_AGE) {
        Some(fresh) => fresh,
        // An older diagnosis is answered at once while a new one is made in the
        // background (it may probe CPA), so no `/status` waits for it but the first.
        None => match monitor.last_diagnosis_json() {
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
            None => crate::monitor::diagnosis_json(&diagnosis(&state, &monitor, None).await?),
        },
    };
    // Written straight from the parts (no JSON tree is built); members in the same
    // (sorted) order as ever.
    let body = StatusBody {
        collector: CollectorJson::new(&collector, counts.dead_letters),
        data_migration: DataMigration {
            applied_rows: 0,
            changed_rows: 0,
            finished_at_ms: state.started_at_ms,
            last_event_id: 0,
            name: "usage_cache_accounting_v2",
            processed_rows: 0,
            status: "completed",
            target_event_id: 0,
            updated_at_ms: state.started_at_ms,
        },
        database: DatabaseJson::new(&database),
        database_maintenance: Maintenance::NONE,
        db_path: &state.db_path,
        dead_letters: counts.dead_letters,
        diagnosis: &diagnosis,
        event_count: counts.events,
        events: counts.events,
        gaps: GapsJson {
            open: unrecorded
                .iter()
                .chain(gaps.iter())
                .any(|gap| gap.end_ms.is_none()),
            recent: unrecorded
                .iter()
                .map(|gap| GapJson::new(gap, false, now))
                .chain(gaps.iter().map(|gap| GapJson::new(gap, true, now)))
                .collect(),
        },
        service: "cpa-manager-plus",
    };
    json_answer(&body)
}

/// `value` as a JSON answer.
fn json_answer<T: Serialize>(value: &T) -> Result<HttpResponse, ApiError> {
    let mut bytes = Vec::with_capacity(4096);
    serde_json::to_writer(&mut bytes, value)
        .map_err(|error| ApiError::internal("encode response", &error))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(bytes))
}

/// The `/status` answer. Members are declared in sorted order (the order they always
/// had).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    collector: CollectorJson<'a>,
    data_migration: DataMigration,
    database: DatabaseJson<'a>,
    database_maintenance: Maintenance,
    db_path: &'a str,
    dead_letters: i64,
    diagnosis: &'a RawValue,
    event_count: i64,
    events: i64,
    gaps: GapsJson<'a>,
    service: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataMigration {
    applied_rows: i64,
    changed_rows: i64,
    finished_at_ms: i64,
    last_event_id: i64,
    name: &'static str,
    processed_rows: i64,
    status: &'static str,
    target_event_id: i64,
    updated_at_ms: i64,
}

/// `databaseMaintenance`: cpamp builds every index inside its migrations and has no
/// offline jobs, so the database never needs a maintenance step.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Maintenance {
    deferred_indexes: i64,
    offline_jobs: i64,
    performance_degraded: bool,
    reasons: [&'static str; 0],
    required: bool,
}

impl Maintenance {
    const NONE: Maintenance = Maintenance {
        deferred_indexes: 0,
        offline_jobs: 0,
        performance_degraded: false,
        reasons: [],
        required: false,
    };
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

/// `/status.collector`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CollectorJson<'a> {
    collector: &'static str,
    dead_letters: i64,
    held_items: usize,
    last_consumed_at: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    last_error: &'a str,
    last_inserted_at: i64,
    mode: &'a str,
    note: &'static str,
    pending_items: usize,
    queue: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    store_error: &'a str,
    total_consumed: u64,
    total_inserted: u64,
    total_skipped: u64,
    transport: &'a str,
    upstream: &'a str,
    warnings: &'a [String],
}

impl<'a> CollectorJson<'a> {
    fn new(collector: &'a CollectorStatus, dead_letters: i64) -> CollectorJson<'a> {
        CollectorJson {
            collector: collector.state.as_str(),
            dead_letters,
            held_items: collector.held_items,
            last_consumed_at: collector.last_consumed_at_ms,
            last_error: &collector.last_error,
            last_inserted_at: collector.last_inserted_at_ms,
            mode: &collector.mode,
            note: collector.note,
            pending_items: collector.pending_items,
            queue: &collector.queue,
            store_error: &collector.store_error,
            total_consumed: collector.total_consumed,
            total_inserted: collector.total_inserted,
            total_skipped: collector.total_skipped,
            transport: &collector.transport,
            upstream: &collector.upstream,
            warnings: &collector.warnings,
        }
    }
}

/// `/status.database`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DatabaseJson<'a> {
    checkpoint: CheckpointJson<'a>,
    database_bytes: u64,
    journal_size_limit_bytes: u64,
    shm_bytes: u64,
    total_bytes: u64,
    wal_bytes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckpointJson<'a> {
    busy: i64,
    checkpointed_frames: i64,
    duration_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    executed_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_truncate_attempt_at_ms: Option<i64>,
    log_frames: i64,
    mode: &'a str,
}

impl<'a> DatabaseJson<'a> {
    fn new(report: &'a DatabaseReport) -> DatabaseJson<'a> {
        let checkpoint = &report.checkpoint;
        DatabaseJson {
            checkpoint: CheckpointJson {
                busy: checkpoint.busy,
                checkpointed_frames: checkpoint.checkpointed_frames,
                duration_ms: checkpoint.duration_ms,
                error: checkpoint.error.as_deref(),
                executed_at_ms: checkpoint.executed_at_ms,
                last_truncate_attempt_at_ms: checkpoint.last_truncate_attempt_at_ms,
                log_frames: checkpoint.log_frames,
                mode: &checkpoint.mode,
            },
            database_bytes: report.database_bytes,
            journal_size_limit_bytes: report.journal_size_limit_bytes,
            shm_bytes: report.shm_bytes,
            total_bytes: report.total_bytes(),
            wal_bytes: report.wal_bytes,
        }
    }
}

/// One gap; `recorded` is false for a gap known only in memory so far (its row is
/// written once the store takes writes again), whose `id` is 0 (row ids start at 1).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GapJson<'a> {
    cause: &'static str,
    detail: &'a str,
    duration_ms: i64,
    end_ms: Option<i64>,
    id: i64,
    open: bool,
    recorded: bool,
    start_ms: i64,
}

impl<'a> GapJson<'a> {
    fn new(gap: &'a CollectionGap, recorded: bool, now_ms: i64) -> GapJson<'a> {
        GapJson {
            cause: gap.cause.as_str(),
            detail: &gap.detail,
            duration_ms: gap.end_ms.unwrap_or(now_ms).saturating_sub(gap.start_ms),
            end_ms: gap.end_ms,
            id: if recorded { gap.id } else { 0 },
            open: gap.end_ms.is_none(),
            recorded,
            start_ms: gap.start_ms,
        }
    }
}

/// `/status.gaps`: the gaps not yet written first (they are the newest), then the
/// stored ones.
#[derive(Serialize)]
struct GapsJson<'a> {
    open: bool,
    recent: Vec<GapJson<'a>>,
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
        .map(|gap| GapJson::new(gap, false, now));
    let recorded = gaps.iter().map(|gap| GapJson::new(gap, true, now));
    #[derive(Serialize)]
    struct Answer<'a> {
        gaps: Vec<GapJson<'a>>,
    }
    json_answer(&Answer {
        gaps: unrecorded.chain(recorded).take(limit as usize).collect(),
    })
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
