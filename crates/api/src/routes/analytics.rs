//! Analytics endpoints: `GET /v0/management/dashboard/summary`,
//! `POST /v0/management/monitoring/analytics` and the CPA-compatible
//! `GET /v0/management/usage`.
//!
//! Handlers only parse and validate; every number comes from
//! `cpamp_domain::analytics` over the store's `AnalyticsStore` port. Bad input is
//! always a 400 with a code (the Go server answered some of these with 500), and
//! unknown JSON fields are ignored so clients of other versions keep working.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use cpamp_domain::analytics::AnalyticsError;
use cpamp_domain::analytics::QueryError;
use cpamp_domain::analytics::analytics_model;
use cpamp_domain::analytics::dashboard::{DashboardRequest, dashboard};
use cpamp_domain::analytics::headers::response_metadata;
use cpamp_domain::analytics::identity::{IdentityFields, UsageDetailKeys};
use cpamp_domain::analytics::monitoring::{Include, MonitoringRequest, PageRequest, monitoring};
use cpamp_domain::analytics::query::{CacheStatus, Cursor, Filters, RawEvent, Scope};
use cpamp_domain::analytics::time::{Granularity, Zone};
use cpamp_domain::analytics::usage_payload_key;
use cpamp_domain::ports::EventPages;
use serde::{Deserialize, Serialize};

use crate::auth::AdminAuth;
use crate::error::{ApiError, ErrorCode};
use crate::state::{AppState, Store};

/// Most events a single events page may ask for.
const MAX_PAGE: i64 = 50_000;
/// The compatible usage payload never carries more events than this.
const USAGE_CAP: i64 = 50_000;

pub(crate) fn configure<S: Store>(config: &mut web::ServiceConfig) {
    let not_allowed = || {
        web::to(|_auth: AdminAuth| async { Err::<HttpResponse, _>(ApiError::method_not_allowed()) })
    };
    for path in [
        "/v0/management/dashboard/summary",
        "/v0/management/dashboard/summary/",
    ] {
        config.service(
            web::resource(path)
                .route(web::get().to(dashboard_summary::<S>))
                .default_service(not_allowed()),
        );
    }
    for path in [
        "/v0/management/monitoring/analytics",
        "/v0/management/monitoring/analytics/",
    ] {
        config.service(
            web::resource(path)
                .route(web::post().to(monitoring_analytics::<S>))
                .default_service(not_allowed()),
        );
    }
    super::accounts::configure::<S>(config);
    // Other paths under `/dashboard` and `/monitoring` get 405 from the ownership
    // table (`routes::owned`), as in Go.
    for path in ["/v0/management/usage", "/v0/management/usage/"] {
        config.service(
            web::resource(path)
                .route(web::get().to(usage::<S>))
                .default_service(not_allowed()),
        );
    }
}

pub(super) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(ErrorCode::RequestFailed, message)
}

pub(super) fn query_error(error: QueryError) -> ApiError {
    match error {
        QueryError::Request(error) => request_error(error),
        QueryError::Store(error) => ApiError::from(error),
    }
}

fn request_error(error: AnalyticsError) -> ApiError {
    let code = match error {
        AnalyticsError::InvalidTimeZone(_) => ErrorCode::InvalidTimeZone,
        AnalyticsError::Invalid(_) => ErrorCode::RequestFailed,
    };
    ApiError::bad_request(code, error.to_string())
}

/// Compact JSON followed by one newline, as the Go server writes it.
pub(super) fn json<T: Serialize>(value: &T) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(json_bytes(value)?))
}

/// The body [`json`] sends.
pub(super) fn json_bytes<T: Serialize>(value: &T) -> Result<bytes::Bytes, ApiError> {
    let mut body =
        serde_json::to_vec(value).map_err(|error| ApiError::internal("encode response", &error))?;
    body.push(b'\n');
    Ok(body.into())
}

/// Answers through the shared analytics gate when the server has one (see
/// [`crate::reads`]), else computes directly.
async fn shared_answer<S: Store, F>(
    state: &AppState<S>,
    reads: Option<web::Data<crate::reads::Reads>>,
    key: [u8; 32],
    compute: F,
) -> Result<HttpResponse, ApiError>
where
    F: std::future::Future<Output = Result<bytes::Bytes, ApiError>> + Send + 'static,
{
    match reads {
        Some(reads) => {
            // Any stored event (collected or imported) changes the data version.
            let version = state.collector.status().snapshot().total_inserted;
            reads.into_inner().answer(key, version, compute).await
        }
        None => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(compute.await?)),
    }
}

// ---------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------

pub(super) fn query_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.trim())
}

/// Parses the dashboard query string. Public for tests of the rules.
pub fn dashboard_request(query: &str, server_now_ms: i64) -> Result<DashboardRequest, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|error| bad(format!("invalid query string: {error}")))?
        .into_inner();
    let today_start_ms = match query_param(&pairs, "today_start_ms") {
        None | Some("") => return Err(bad("today_start_ms is required")),
        Some(text) => match text.parse::<i64>() {
            Ok(value) if value > 0 => value,
            _ => return Err(bad("today_start_ms must be a positive integer")),
        },
    };
    let optional = |name: &str, message: &str| -> Result<i64, ApiError> {
        match query_param(&pairs, name) {
            None | Some("") => Ok(0),
            Some(text) => text.parse::<i64>().map_err(|_| bad(message.to_string())),
        }
    };
    let now = optional("now_ms", "now_ms must be an integer")?;
    let now_ms = if now <= 0 { server_now_ms } else { now };
    if now_ms < today_start_ms {
        return Err(bad(
            "now_ms must be greater than or equal to today_start_ms",
        ));
    }
    let top_models = optional("top_models", "top_models must be an integer")?;
    let recent_failures = optional("recent_failures", "recent_failures must be an integer")?;
    let count = |value: i64| {
        if value <= 0 {
            5
        } else {
            usize::try_from(value).unwrap_or(usize::MAX)
        }
    };
    Ok(DashboardRequest {
        today_start_ms,
        now_ms,
        top_models: count(top_models),
        recent_failures: count(recent_failures).min(MAX_PAGE as usize),
        generated_at_ms: server_now_ms,
    })
}

async fn dashboard_summary<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    reads: Option<web::Data<crate::reads::Reads>>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let server_now = now_ms();
    let parsed = dashboard_request(request.query_string(), server_now)?;
    // Panels send their clock as `now_ms`: requests for "today up to now" share a key.
    let pairs = web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let key = crate::reads::key(
        "dashboard",
        &crate::reads::live_key_query(&pairs, &["now_ms"], server_now),
    );
    let store = state.store.clone();
    shared_answer(&state, reads, key, async move {
        let summary = dashboard(&store, parsed).await.map_err(query_error)?;
        super::aliases::json_bytes_with_aliases(&store, &summary).await
    })
    .await
}

// ---------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct Body {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    now_ms: Option<i64>,
    time_zone: Option<String>,
    search_query: Option<String>,
    search_api_key_hash: Option<String>,
    filters: Option<FiltersBody>,
    include: Option<IncludeBody>,
}

#[derive(Debug, Default, Deserialize)]
struct FiltersBody {
    models: Option<Vec<String>>,
    providers: Option<Vec<String>>,
    accounts: Option<Vec<String>>,
    credential_ids: Option<Vec<String>>,
    auth_files: Option<Vec<String>>,
    auth_indices: Option<Vec<String>>,
    api_key_hashes: Option<Vec<String>>,
    source_hashes: Option<Vec<String>>,
    project_ids: Option<Vec<String>>,
    request_types: Option<Vec<String>>,
    header_error_kinds: Option<Vec<String>>,
    header_error_codes: Option<Vec<String>>,
    header_quota_plans: Option<Vec<String>>,
    header_trace_ids: Option<Vec<String>>,
    include_failed: Option<bool>,
    failed_only: Option<bool>,
    min_latency_ms: Option<i64>,
    cache_status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct IncludeBody {
    granularity: Option<String>,
    summary: Option<bool>,
    summary_profile: Option<String>,
    summary_percentiles: Option<bool>,
    summary_comparison: Option<bool>,
    timeline: Option<bool>,
    anomaly_points: Option<bool>,
    hourly_distribution: Option<bool>,
    heatmap: Option<bool>,
    model_share: Option<bool>,
    model_stats: Option<bool>,
    channel_share: Option<bool>,
    failure_sources: Option<bool>,
    account_stats: Option<bool>,
    credential_stats: Option<bool>,
    credential_timeline: Option<bool>,
    api_key_timeline: Option<bool>,
    api_key_stats: Option<bool>,
    filter_options: Option<bool>,
    filter_selectors: Option<bool>,
    task_buckets: Option<bool>,
    recent_failures: Option<i64>,
    events_page: Option<PageBody>,
    drilldown_preview: Option<DrilldownBody>,
}

#[derive(Debug, Default, Deserialize)]
struct PageBody {
    limit: Option<i64>,
    before_ms: Option<i64>,
    before_id: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct DrilldownBody {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: Option<i64>,
}

fn list(values: Option<Vec<String>>) -> Vec<String> {
    Filters::normalize_list(values.unwrap_or_default(), str::to_string)
}

fn lower_list(values: Option<Vec<String>>) -> Vec<String> {
    Filters::normalize_list(values.unwrap_or_default(), str::to_lowercase)
}

/// Parses and validates a monitoring body. Public for tests of the rules.
pub fn monitoring_request(bytes: &[u8], server_now_ms: i64) -> Result<MonitoringRequest, ApiError> {
    // Only the first JSON value counts; trailing bytes are ignored like Go's decoder.
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Body>();
    let body = match stream.next() {
        Some(Ok(body)) => body,
        Some(Err(error)) => return Err(bad(error.to_string())),
        None => return Err(bad("request body must be a JSON object")),
    };
    let (from_ms, to_ms) = (body.from_ms.unwrap_or(0), body.to_ms.unwrap_or(0));
    if from_ms <= 0 || to_ms <= 0 || from_ms >= to_ms {
        return Err(bad(
            "from_ms and to_ms are required and from_ms must be less than to_ms",
        ));
    }
    let zone = Zone::parse(body.time_zone.as_deref().unwrap_or("")).map_err(request_error)?;
    let filters_body = body.filters.unwrap_or_default();
    let filters = Filters {
        models: Filters::normalize_list(filters_body.models.unwrap_or_default(), |value| {
            analytics_model(value).to_string()
        }),
        providers: lower_list(filters_body.providers),
        accounts: lower_list(filters_body.accounts),
        credential_ids: list(filters_body.credential_ids),
        auth_files: list(filters_body.auth_files),
        auth_indices: list(filters_body.auth_indices),
        api_key_hashes: list(filters_body.api_key_hashes),
        source_hashes: list(filters_body.source_hashes),
        project_ids: list(filters_body.project_ids),
        request_types: list(filters_body.request_types),
        header_error_kinds: list(filters_body.header_error_kinds),
        header_error_codes: list(filters_body.header_error_codes),
        header_quota_plans: list(filters_body.header_quota_plans),
        header_trace_ids: list(filters_body.header_trace_ids),
        include_failed: filters_body.include_failed.unwrap_or(true),
        failed_only: filters_body.failed_only.unwrap_or(false),
        min_latency_ms: filters_body.min_latency_ms.unwrap_or(0),
        cache_status: filters_body
            .cache_status
            .as_deref()
            .and_then(CacheStatus::parse),
    };
    let scope = Scope {
        from_ms,
        to_ms,
        filters,
        search_query: body.search_query.unwrap_or_default().trim().to_lowercase(),
        search_api_key_hash: body
            .search_api_key_hash
            .unwrap_or_default()
            .trim()
            .to_lowercase(),
    };
    let raw = body.include.unwrap_or_default();
    let flag = |value: Option<bool>| value.unwrap_or(false);
    let events_page = match raw.events_page {
        None => None,
        Some(page) => {
            let limit = page.limit.unwrap_or(0);
            if limit > MAX_PAGE {
                return Err(bad("events_page.limit must be less than or equal to 50000"));
            }
            Some(PageRequest {
                limit: if limit <= 0 {
                    100
                } else {
                    usize::try_from(limit).unwrap_or(100)
                },
                cursor: Cursor {
                    before_ms: page.before_ms.unwrap_or(0),
                    before_id: page.before_id.unwrap_or(0),
                },
            })
        }
    };
    let drilldown_preview = raw.drilldown_preview.map(|preview| {
        let limit = preview.limit.unwrap_or(0);
        let limit = if limit <= 0 { 20 } else { limit.min(100) };
        (
            preview.from_ms.unwrap_or(0),
            preview.to_ms.unwrap_or(0),
            usize::try_from(limit).unwrap_or(20),
        )
    });
    let include = Include {
        summary: flag(raw.summary),
        compact: raw.summary_profile.as_deref() == Some("compact"),
        percentiles: flag(raw.summary_percentiles),
        summary_comparison: flag(raw.summary_comparison),
        timeline: flag(raw.timeline),
        anomaly_points: flag(raw.anomaly_points),
        hourly_distribution: flag(raw.hourly_distribution),
        heatmap: flag(raw.heatmap),
        model_share: flag(raw.model_share),
        model_stats: flag(raw.model_stats),
        channel_share: flag(raw.channel_share),
        failure_sources: flag(raw.failure_sources),
        account_stats: flag(raw.account_stats),
        credential_stats: flag(raw.credential_stats),
        credential_timeline: flag(raw.credential_timeline),
        api_key_timeline: flag(raw.api_key_timeline),
        api_key_stats: flag(raw.api_key_stats),
        filter_options: flag(raw.filter_options),
        filter_selectors: flag(raw.filter_selectors),
        task_buckets: flag(raw.task_buckets),
        recent_failures: usize::try_from(raw.recent_failures.unwrap_or(0).clamp(0, MAX_PAGE))
            .unwrap_or(0),
        events_page,
        drilldown_preview,
    };
    Ok(MonitoringRequest {
        granularity: Granularity::resolve(raw.granularity.as_deref(), from_ms, to_ms),
        scope,
        now_ms: body.now_ms.filter(|now| *now > 0).unwrap_or(server_now_ms),
        zone,
        include,
        generated_at_ms: server_now_ms,
    })
}

async fn monitoring_analytics<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
    reads: Option<web::Data<crate::reads::Reads>>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let server_now = now_ms();
    let request = monitoring_request(&body, server_now)?;
    // Panels end "today" at their clock: requests for the same range up to now share a key.
    let canonical = crate::reads::live_key_json(&body, &["to_ms", "now_ms"], server_now);
    let key = crate::reads::key("monitoring", canonical.as_deref().unwrap_or(&body));
    let store = state.store.clone();
    shared_answer(&state, reads, key, async move {
        let response = monitoring(&store, request).await.map_err(query_error)?;
        super::aliases::json_bytes_with_aliases(&store, &response).await
    })
    .await
}

// ---------------------------------------------------------------------------
// CPA-compatible usage payload
// ---------------------------------------------------------------------------

fn is_empty(value: &str) -> bool {
    value.is_empty()
}

#[derive(Serialize)]
struct UsageTokens {
    input_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cached_tokens: i64,
    cache_tokens: i64,
    cache_read_tokens: i64,
    cache_creation_tokens: i64,
    total_tokens: i64,
}

#[derive(Serialize)]
struct UsageDetail {
    timestamp: String,
    #[serde(flatten)]
    identity: IdentityFields<UsageDetailKeys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_snapshot_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttft_ms: Option<i64>,
    #[serde(skip_serializing_if = "is_empty")]
    requested_model: String,
    #[serde(skip_serializing_if = "is_empty")]
    resolved_model: String,
    #[serde(skip_serializing_if = "is_empty")]
    reasoning_effort: String,
    #[serde(skip_serializing_if = "is_empty")]
    service_tier: String,
    #[serde(skip_serializing_if = "is_empty")]
    request_service_tier: String,
    #[serde(skip_serializing_if = "is_empty")]
    response_service_tier: String,
    #[serde(skip_serializing_if = "is_empty")]
    cache_input_mode: String,
    #[serde(skip_serializing_if = "is_empty")]
    executor_type: String,
    tokens: UsageTokens,
    failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_metadata: Option<Box<serde_json::value::RawValue>>,
}

fn usage_detail(event: &RawEvent) -> UsageDetail {
    let identity = &event.identity;
    let cached = event.compat_cached();
    UsageDetail {
        timestamp: event.timestamp.clone(),
        identity: IdentityFields {
            // The stored snapshot only: no fallback to the event provider.
            auth_provider_snapshot: identity.auth_provider.clone(),
            ..IdentityFields::of(identity)
        },
        auth_snapshot_at_ms: event.auth_snapshot_at_ms.filter(|value| *value != 0),
        latency_ms: event.latency_ms,
        ttft_ms: event.ttft_ms,
        requested_model: event.effective_requested().to_string(),
        resolved_model: event.resolved_model.to_string(),
        reasoning_effort: event.reasoning_effort.to_string(),
        service_tier: event.service_tier.to_string(),
        request_service_tier: event.request_service_tier.to_string(),
        response_service_tier: event.response_service_tier.to_string(),
        cache_input_mode: event.cache_input_mode.unwrap_or("").to_string(),
        executor_type: identity.executor_type.to_string(),
        tokens: UsageTokens {
            input_tokens: event.tokens.input,
            output_tokens: event.tokens.output,
            reasoning_tokens: event.tokens.reasoning,
            cached_tokens: cached,
            cache_tokens: cached,
            cache_read_tokens: event.tokens.cache_read,
            cache_creation_tokens: event.tokens.cache_creation,
            total_tokens: event.tokens.total,
        },
        failed: event.failed,
        fail_status_code: event.fail_status_code.filter(|code| *code != 0),
        fail_summary: event.fail_summary.clone().filter(|text| !text.is_empty()),
        response_metadata: response_metadata(event.response_metadata_json.as_deref()),
    }
}

/// Where the streamed usage payload stands: the endpoint and model whose
/// `details` array is open.
struct UsageWriter<P> {
    pages: P,
    head: Option<Vec<u8>>,
    open: Option<(String, String)>,
}

impl<P> UsageWriter<P> {
    /// Appends one detail, opening (and closing) the endpoint and model objects
    /// around it as the grouped order moves on.
    fn push(&mut self, out: &mut Vec<u8>, event: &RawEvent) -> serde_json::Result<()> {
        let endpoint = usage_payload_key(&event.endpoint);
        let model = usage_payload_key(&event.analytics_model);
        let (same_endpoint, same_model) = match &self.open {
            Some((open_endpoint, open_model)) => (
                open_endpoint == endpoint,
                open_endpoint == endpoint && open_model == model,
            ),
            None => (false, false),
        };
        if same_model {
            out.push(b',');
        } else {
            if same_endpoint {
                out.extend_from_slice(b"]},");
            } else {
                if self.open.is_some() {
                    out.extend_from_slice(b"]}}},");
                }
                serde_json::to_writer(&mut *out, endpoint)?;
                out.extend_from_slice(br#":{"models":{"#);
            }
            serde_json::to_writer(&mut *out, model)?;
            out.extend_from_slice(br#":{"details":["#);
            self.open = Some((endpoint.to_string(), model.to_string()));
        }
        serde_json::to_writer(&mut *out, &usage_detail(event))
    }

    /// The bytes that close the payload.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            out.extend_from_slice(b"]}}}");
        }
        out.extend_from_slice(b"}}\n");
    }
}

/// CPA's usage payload over the newest events (at most [`USAGE_CAP`]), written
/// as it is read: totals first (counted in the same snapshot), then the details
/// nested by endpoint and model, one page of events at a time, so memory stays
/// flat however large the answer.
async fn usage<S: Store>(
    _auth: AdminAuth,
    state: web::Data<AppState<S>>,
) -> Result<HttpResponse, ApiError> {
    let limit = if state.query_limit <= 0 {
        USAGE_CAP
    } else {
        state.query_limit.min(USAGE_CAP)
    };
    let (pages, tallies) = state
        .store
        .open_usage_groups(u64::try_from(limit).unwrap_or(50_000))
        .await
        .map_err(ApiError::from)?;
    let events = i64::try_from(tallies.events).unwrap_or(i64::MAX);
    let failed = i64::try_from(tallies.failed).unwrap_or(i64::MAX);
    let head = format!(
        r#"{{"total_requests":{events},"success_count":{},"failure_count":{failed},"total_tokens":{},"apis":{{"#,
        events - failed,
        tallies.total_tokens
    );
    let first = UsageWriter {
        pages,
        head: Some(head.into_bytes()),
        open: None,
    };
    let body = futures_util::stream::unfold(Some(first), |writer| async move {
        let mut writer = writer?;
        let mut out = writer.head.take().unwrap_or_default();
        match writer.pages.next_page().await {
            Ok(page) if page.is_empty() => {
                writer.finish(&mut out);
                Some((Ok(Bytes::from(out)), None))
            }
            Ok(page) => {
                for event in &page {
                    if let Err(error) = writer.push(&mut out, event) {
                        tracing::error!(%error, "usage payload encoding failed");
                        return Some((
                            Err(actix_web::error::ErrorInternalServerError(
                                "usage payload failed",
                            )),
                            None,
                        ));
                    }
                }
                Some((Ok::<_, actix_web::Error>(Bytes::from(out)), Some(writer)))
            }
            Err(error) => {
                // Bytes went out already: the answer is cut short, which the
                // client sees as invalid JSON.
                tracing::error!(%error, "usage payload stream failed");
                Some((
                    Err(actix_web::error::ErrorInternalServerError(
                        "usage payload failed",
                    )),
                    None,
                ))
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}
