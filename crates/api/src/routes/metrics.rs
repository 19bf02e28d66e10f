//! `GET /metrics`: Prometheus text exposition format 0.0.4.
//!
//! Accepts the admin key or, when set, `METRICS_TOKEN` (so a scraper never holds the key
//! that controls the server). Every value is read from counters and cached figures; a
//! scrape never scans a table.

use std::fmt::Write;

use actix_web::{HttpRequest, HttpResponse, web};
use cpamp_collector::CollectorState;

use crate::auth::{AdminAuthenticator, AuthBackend, bearer_token, client_address};
use crate::error::ApiError;
use crate::monitor::Monitor;
use crate::state::{AppState, Store};

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/metrics")
            .route(web::get().to(metrics::<S>))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::method_not_allowed())
            })),
    );
}

/// The scrape token, else the admin key under the same failure limit as every other
/// admin check.
async fn authorize(request: &HttpRequest, monitor: &Monitor) -> Result<(), ApiError> {
    let token = bearer_token(request);
    let expected = monitor.metrics_token.expose();
    if let Some(token) = &token
        && !expected.is_empty()
        && constant_time_eq(token.as_bytes(), expected.as_bytes())
    {
        return Ok(());
    }
    let Some(authenticator) = request.app_data::<web::Data<AdminAuthenticator>>() else {
        return Err(ApiError::invalid_admin_key(crate::auth::INVALID_ADMIN_KEY));
    };
    let backend = request.app_data::<web::Data<dyn AuthBackend>>();
    crate::auth::check_admin(
        authenticator,
        backend.map(|data| &***data),
        client_address(request),
        token.as_deref(),
    )
    .await
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn metrics<S: Store>(
    request: HttpRequest,
    state: web::Data<AppState<S>>,
    monitor: web::Data<Monitor>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &monitor).await?;
    let counts = state.store.counts().await?;
    let database = state.store.database_report().await?;
    let mut gaps = state.gaps.unrecorded();
    gaps.extend(state.store.gaps(i64::MIN, i64::MAX, 1).await?);
    let collector = state.collector.status().snapshot();
    let mut out = Exposition::default();

    out.family(
        "cpamp_events_ingested_total",
        "counter",
        "Usage events stored since the process started.",
    );
    out.sample(
        "cpamp_events_ingested_total",
        &[],
        collector.total_inserted as f64,
    );
    out.family(
        "cpamp_events_skipped_total",
        "counter",
        "Duplicate usage events skipped since the process started.",
    );
    out.sample(
        "cpamp_events_skipped_total",
        &[],
        collector.total_skipped as f64,
    );
    out.family(
        "cpamp_events_dead_lettered_total",
        "counter",
        "Queue items that could not be decoded and were kept as dead letters since the process started.",
    );
    out.sample(
        "cpamp_events_dead_lettered_total",
        &[],
        collector.total_dead_lettered as f64,
    );
    out.family(
        "cpamp_events_consumed_total",
        "counter",
        "Queue items read from CPA since the process started.",
    );
    out.sample(
        "cpamp_events_consumed_total",
        &[],
        collector.total_consumed as f64,
    );
    out.family(
        "cpamp_events_stored",
        "gauge",
        "Usage events in the database.",
    );
    out.sample("cpamp_events_stored", &[], counts.events as f64);
    out.family(
        "cpamp_dead_letters_stored",
        "gauge",
        "Dead letters in the database.",
    );
    out.sample("cpamp_dead_letters_stored", &[], counts.dead_letters as f64);

    out.family(
        "cpamp_collector_state",
        "gauge",
        "1 for the collector's current state, 0 for the others.",
    );
    for candidate in [
        CollectorState::Stopped,
        CollectorState::Starting,
        CollectorState::Running,
        CollectorState::Error,
    ] {
        out.sample(
            "cpamp_collector_state",
            &[("state", candidate.as_str())],
            if candidate == collector.state {
                1.0
            } else {
                0.0
            },
        );
    }
    out.family(
        "cpamp_collector_last_consumed_timestamp_seconds",
        "gauge",
        "Unix time of the last non-empty read from CPA (0 = never).",
    );
    out.sample(
        "cpamp_collector_last_consumed_timestamp_seconds",
        &[],
        collector.last_consumed_at_ms as f64 / 1000.0,
    );
    out.family(
        "cpamp_collector_last_inserted_timestamp_seconds",
        "gauge",
        "Unix time of the last committed batch (0 = never).",
    );
    out.sample(
        "cpamp_collector_last_inserted_timestamp_seconds",
        &[],
        collector.last_inserted_at_ms as f64 / 1000.0,
    );
    // Consuming stamps its time before the insert commits, so a healthy collector has
    // lastInsertedAt >= lastConsumedAt and a lag of 0.
    let lag_ms = collector
        .last_consumed_at_ms
        .saturating_sub(collector.last_inserted_at_ms)
        .max(0);
    out.family(
        "cpamp_collector_insert_lag_seconds",
        "gauge",
        "How far storing trails consuming: 0 while every consumed batch is committed.",
    );
    out.sample(
        "cpamp_collector_insert_lag_seconds",
        &[],
        lag_ms as f64 / 1000.0,
    );
    out.family(
        "cpamp_collector_pending_items",
        "gauge",
        "Items received from CPA and held in memory because the store refused them.",
    );
    out.sample(
        "cpamp_collector_pending_items",
        &[],
        collector.pending_items as f64,
    );
    out.family(
        "cpamp_collector_gap_open",
        "gauge",
        "1 while the collector is not receiving (an open collection gap).",
    );
    out.sample(
        "cpamp_collector_gap_open",
        &[],
        if gaps.iter().any(|gap| gap.end_ms.is_none()) {
            1.0
        } else {
            0.0
        },
    );

    out.family("cpamp_sqlite_bytes", "gauge", "Size of the SQLite files.");
    out.sample(
        "cpamp_sqlite_bytes",
        &[("file", "database")],
        database.database_bytes as f64,
    );
    out.sample(
        "cpamp_sqlite_bytes",
        &[("file", "wal")],
        database.wal_bytes as f64,
    );
    out.sample(
        "cpamp_sqlite_bytes",
        &[("file", "shm")],
        database.shm_bytes as f64,
    );

    out.family(
        "cpamp_http_requests_total",
        "counter",
        "HTTP requests answered, by route, method and status.",
    );
    for ((route, method, status), count) in monitor.request_counts() {
        let status = status.to_string();
        out.sample(
            "cpamp_http_requests_total",
            &[("route", &route), ("method", &method), ("status", &status)],
            count as f64,
        );
    }
    out.family(
        "cpamp_automation_actions_total",
        "counter",
        "Account automation decisions since the process started, by actor (quota_cooldown, account_actions, inspection, operator), action and outcome (ok, failed, skipped).",
    );
    for ((actor, action, outcome), count) in state.automation.audit.counts() {
        out.sample(
            "cpamp_automation_actions_total",
            &[("actor", actor), ("action", &action), ("outcome", outcome)],
            count as f64,
        );
    }
    let enricher = state.automation.enricher.stats();
    out.family(
        "cpamp_enrichment_events_total",
        "counter",
        "Usage events labelled with CPA's auth files since the process started.",
    );
    out.sample(
        "cpamp_enrichment_events_total",
        &[],
        enricher.enriched_events as f64,
    );
    out.family(
        "cpamp_enrichment_credentials",
        "gauge",
        "Credentials in the auth-file listing enrichment currently uses.",
    );
    out.sample(
        "cpamp_enrichment_credentials",
        &[],
        enricher.credentials as f64,
    );
    out.family(
        "cpamp_enrichment_failed_fetches_total",
        "counter",
        "Failed CPA auth-file listings for enrichment since the process started.",
    );
    out.sample(
        "cpamp_enrichment_failed_fetches_total",
        &[],
        enricher.failed_fetches as f64,
    );
    out.family(
        "cpamp_automation_dropped_events_total",
        "counter",
        "Stored failures account automation skipped because its workers were behind.",
    );
    out.sample(
        "cpamp_automation_dropped_events_total",
        &[],
        state.automation.dropped_events() as f64,
    );
    if let Some(reads) = request.app_data::<web::Data<crate::reads::Reads>>() {
        let counts = reads.counts();
        for (name, help, value) in [
            (
                "cpamp_analytics_computations_total",
                "Dashboard and monitoring answers computed since the process started.",
                &counts.computed,
            ),
            (
                "cpamp_analytics_shared_answers_total",
                "Dashboard and monitoring requests answered by a computation already running or a fresh copy.",
                &counts.shared,
            ),
            (
                "cpamp_analytics_stale_answers_total",
                "Dashboard and monitoring requests answered by the last copy (at most 5 s old) while a newer answer was computed.",
                &counts.stale,
            ),
            (
                "cpamp_analytics_refused_total",
                "Dashboard and monitoring requests answered 503 because too many were waiting or their HTTP worker was crowded.",
                &counts.refused,
            ),
        ] {
            out.family(name, "counter", help);
            out.sample(
                name,
                &[],
                value.load(std::sync::atomic::Ordering::Relaxed) as f64,
            );
        }
    }
    if let Some(authenticator) = request.app_data::<web::Data<AdminAuthenticator>>() {
        out.family(
            "cpamp_admin_key_checks_total",
            "counter",
            "Admin key hash checks (argon2id) run since the process started; remembered keys and refused attempts run none.",
        );
        out.sample(
            "cpamp_admin_key_checks_total",
            &[],
            authenticator.checks_run() as f64,
        );
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out.text))
}

/// Builds text format 0.0.4: `# HELP`, `# TYPE`, then samples with escaped labels.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let escaped = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}
