//! The doctor: checks, from this server's own network position, every cause the FAQ lists
//! for "Monitoring has no data", and says for each what was observed and the fix.
//!
//! It is used by `/status` (`diagnosis`) and by `cpamp-server doctor`. Network checks talk
//! to CPA with short timeouts and only send the management key after CPA answered plain
//! HTTP, so a diagnosis never adds failed logins towards CPA's IP ban.

use std::time::Duration;

use cpamp_collector::{CollectorState, CollectorStatus, RESP_OVER_HTTP_HINT};
use cpamp_domain::Secret;
use cpamp_domain::automation::runs::{InspectionStore, Ownership};
use cpamp_domain::automation::store::{Candidate, CandidateStore, Cooldown, CooldownStore};
use cpamp_domain::ports::{CollectionGap, StoreCounts, StoreError};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cpa_http::{self, Target};
use crate::monitor::{CollectorPlan, CpaFacts, HostFacts};

/// Timeout of each request the doctor sends to CPA.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// CPA's default queue retention, assumed until CPA reports its own.
pub const DEFAULT_RETENTION_SECS: i64 = 60;
/// First CPA version with the HTTP usage queue.
pub const MIN_HTTP_QUEUE_VERSION: (u64, u64, u64) = (6, 10, 8);
/// First CPA version with the metadata set cpamp records in full.
pub const RECOMMENDED_VERSION: (u64, u64, u64) = (7, 1, 39);
/// A database elsewhere counts as "holding data" above this size; a schema-only database
/// is far smaller.
pub const VOLUME_HINT_MIN_BYTES: u64 = 1024 * 1024;
/// The collector's "another consumer" warning starts with this text.
const OTHER_CONSUMER_PREFIX: &str = "Another consumer is probably draining";

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Collection does not work (or loses data) until this is fixed.
    Error,
    /// Collection works but something is degraded or was lost.
    Warning,
    /// Worth knowing; nothing to fix.
    Info,
}

/// A gap a finding refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GapRef {
    /// Unix ms where the gap starts.
    pub start_ms: i64,
    /// Unix ms where it ends; `None` while it is open.
    pub end_ms: Option<i64>,
}

/// One diagnosed cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// A stable identifier of the cause (scripts switch on it).
    pub code: &'static str,
    /// How serious it is.
    pub severity: Severity,
    /// What was observed, with the values seen.
    pub observed: String,
    /// The fix, in one sentence.
    pub fix: String,
    /// Further steps, most likely first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// The collection gap the finding explains, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<GapRef>,
}

impl Finding {
    fn new(code: &'static str, severity: Severity, observed: String, fix: &str) -> Finding {
        Finding {
            code,
            severity,
            observed,
            fix: fix.to_string(),
            hints: Vec::new(),
            gap: None,
        }
    }
}

/// What the doctor learned about CPA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpaReport {
    /// The CPA URL checked.
    pub url: String,
    /// CPA answered.
    pub reachable: bool,
    /// CPA accepted the management key.
    pub key_accepted: bool,
    /// CPA's version, when it reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CPA's `usage-statistics-enabled` switch, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_statistics_enabled: Option<bool>,
    /// How long CPA keeps queued usage events, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_seconds: Option<i64>,
}

/// The doctor's verdict (`/status.diagnosis`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    /// True when no finding is an error.
    pub ok: bool,
    /// Unix ms of the check.
    pub checked_at_ms: i64,
    /// What was learned about CPA; `None` when no connection is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpa: Option<CpaReport>,
    /// Every cause found.
    pub findings: Vec<Finding>,
}

/// The CPA connection to check.
#[derive(Debug, Clone)]
pub struct CpaTarget {
    /// CPA's base URL.
    pub base_url: String,
    /// CPA's management key.
    pub management_key: Secret,
}

/// Everything the doctor looks at.
#[derive(Debug, Clone)]
pub struct DoctorInput {
    /// The CPA connection in effect; `None` when none is configured.
    pub connection: Option<CpaTarget>,
    /// The live collector status; `None` when the server is not running (offline CLI).
    pub collector: Option<CollectorStatus>,
    /// The collector settings in effect.
    pub plan: CollectorPlan,
    /// What the doctor knows about the host (container, data directory).
    pub host: HostFacts,
    /// Stored events and dead letters.
    pub counts: StoreCounts,
    /// Recent gaps, newest first.
    pub gaps: Vec<CollectionGap>,
    /// Accounts account automation keeps disabled.
    pub automation: AutomationFacts,
    /// The current time, Unix ms.
    pub now_ms: i64,
}

/// Accounts account automation keeps disabled, and until when.
#[derive(Debug, Clone, Default)]
pub struct AutomationFacts {
    /// Active quota cooldowns (restored at `recover_at_ms`).
    pub cooldowns: Vec<Cooldown>,
    /// Pending candidates whose account auto-disable turned off (never restored
    /// automatically).
    pub auto_disabled: Vec<Candidate>,
    /// Accounts an automatic inspection disabled.
    pub inspection_owned: Vec<Ownership>,
}

/// Reads what [`AutomationFacts`] reports from the store.
pub async fn automation_facts<S>(store: &S) -> Result<AutomationFacts, StoreError>
where
    S: CooldownStore + CandidateStore + InspectionStore,
{
    let cooldowns = store.active_cooldowns().await?;
    let (pending, _) = store.candidates(Some("pending"), 500).await?;
    Ok(AutomationFacts {
        cooldowns,
        auto_disabled: pending
            .into_iter()
            .filter(|candidate| candidate.auto_disabled_at_ms.is_some())
            .collect(),
        inspection_owned: store.ownerships().await?,
    })
}

/// A cooldown this late is reported as overdue (restores are tried at least every 15 s).
const RESTORE_OVERDUE_MS: i64 = 60_000;

fn check_automation(facts: &AutomationFacts, now_ms: i64, findings: &mut Vec<Finding>) {
    let mut lines = Vec::new();
    let mut overdue = Vec::new();
    for cooldown in &facts.cooldowns {
        let name = if cooldown.auth_index.is_empty() {
            cooldown.auth_file_name.clone()
        } else {
            format!("{} ({})", cooldown.auth_file_name, cooldown.auth_index)
        };
        lines.push(format!(
            "{name}: quota cooldown ({}), restored at {}",
            cooldown.reason_code,
            format_ms(cooldown.recover_at_ms)
        ));
        if now_ms - cooldown.recover_at_ms > RESTORE_OVERDUE_MS {
            overdue.push(format!(
                "{name} was due at {}{}",
                format_ms(cooldown.recover_at_ms),
                if cooldown.last_error.is_empty() {
                    String::new()
                } else {
                    format!(" (last attempt: {})", cooldown.last_error)
                }
            ));
        }
    }
    for candidate in &facts.auto_disabled {
        lines.push(format!(
            "{}: disabled by the account action queue ({}), never restored automatically; enable it on the Issues page",
            candidate.auth_file_name, candidate.reason_code
        ));
    }
    for owned in &facts.inspection_owned {
        lines.push(format!(
            "{}: disabled by server inspection (run {}), restored only by a later run with autoRecoverEnabled",
            owned.auth_file_name, owned.run_id
        ));
    }
    if !lines.is_empty() {
        let mut finding = Finding::new(
            "automation_disabled_accounts",
            Severity::Info,
            format!(
                "{} account(s) are disabled in CPA by cpamp's account automation.",
                lines.len()
            ),
            "Nothing to do unless one should run now: enable it in the panel (a change made there ends the automation's claim).",
        );
        finding.hints = lines;
        findings.push(finding);
    }
    if !overdue.is_empty() {
        let mut finding = Finding::new(
            "automation_restore_overdue",
            Severity::Warning,
            format!(
                "{} quota cooldown(s) are past their reset and the account is still disabled.",
                overdue.len()
            ),
            "Check that CPA is reachable with the saved CPA Management Key (restores are retried every 15 s), or enable the account in the panel.",
        );
        finding.hints = overdue;
        findings.push(finding);
    }
}

/// Runs every check. Returns the diagnosis and what was learned about CPA.
pub async fn diagnose(input: &DoctorInput) -> (Diagnosis, CpaFacts) {
    let mut findings = Vec::new();
    let mut facts = CpaFacts::default();
    let mut report = None;
    match &input.connection {
        None => findings.push(Finding::new(
            "manager_not_configured",
            Severity::Error,
            "No CPA connection is saved and CPA_UPSTREAM_URL with CPA_MANAGEMENT_KEY is not set, so the collector \
             has nothing to consume."
                .to_string(),
            "Open /management.html and complete setup with the CPA URL and the CPA Management Key (or set \
             CPA_UPSTREAM_URL and CPA_MANAGEMENT_KEY).",
        )),
        Some(connection) => {
            let cpa = check_cpa(connection, input, &mut findings, &mut facts).await;
            report = Some(cpa);
        }
    }
    let retention = facts.retention_secs.unwrap_or(DEFAULT_RETENTION_SECS);
    if let Some(collector) = &input.collector {
        check_collector(collector, input, &mut findings);
    }
    check_gaps(&input.gaps, retention, input.now_ms, &mut findings);
    check_automation(&input.automation, input.now_ms, &mut findings);
    check_data_dir(input, &mut findings);
    let ok = !findings
        .iter()
        .any(|finding| finding.severity == Severity::Error);
    (
        Diagnosis {
            ok,
            checked_at_ms: input.now_ms,
            cpa: report,
            findings,
        },
        facts,
    )
}

async fn check_cpa(
    connection: &CpaTarget,
    input: &DoctorInput,
    findings: &mut Vec<Finding>,
    facts: &mut CpaFacts,
) -> CpaReport {
    let base = connection.base_url.as_str();
    let mut report = CpaReport {
        url: base.to_string(),
        ..CpaReport::default()
    };
    let target = match Target::parse(base) {
        Ok(target) => target,
        Err(error) => {
            findings.push(Finding::new(
                "cpa_url_invalid",
                Severity::Error,
                format!("The saved CPA URL cannot be used: {error}."),
                "Save the CPA URL as http://<host>:8317 (or the https URL of a reverse proxy in front of CPA).",
            ));
            return report;
        }
    };
    // Plain reachability first, without any key.
    if let Err(error) = cpa_http::exchange(
        base,
        http::Method::GET,
        "/healthz",
        None,
        None,
        PROBE_TIMEOUT,
    )
    .await
    {
        findings.push(unreachable_finding(
            base,
            &target,
            &error,
            input.host.in_container,
        ));
        return report;
    }
    report.reachable = true;
    let reply = match cpa_http::exchange(
        base,
        http::Method::GET,
        "/v0/management/config",
        Some(connection.management_key.expose()),
        None,
        PROBE_TIMEOUT,
    )
    .await
    {
        Ok(reply) => reply,
        Err(error) => {
            findings.push(unreachable_finding(
                base,
                &target,
                &error,
                input.host.in_container,
            ));
            return report;
        }
    };
    let version = reply
        .headers
        .get("x-cpa-version")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    report.version = version.clone();
    facts.version = version.clone();
    match reply.status.as_u16() {
        200..=299 => {}
        401 => {
            findings.push(Finding::new(
                "cpa_management_key_rejected",
                Severity::Error,
                format!(
                    "CPA at {base} answered 401 to GET /v0/management/config with the saved CPA Management Key."
                ),
                "Save CPA's remote-management secret-key as the CPA Management Key (not the CPAMP Admin Key or a \
                 CPA API key) in /management.html.",
            ));
            return report;
        }
        403 => {
            findings.push(Finding::new(
                "cpa_management_forbidden",
                Severity::Error,
                format!(
                    "CPA at {base} answered 403 to GET /v0/management/config: {}",
                    body_text(&reply.body)
                ),
                "Set remote-management.allow-remote: true in CPA for a remote cpamp, and wait out (or restart CPA \
                 to clear) an IP ban caused by five failed logins.",
            ));
            return report;
        }
        404 => {
            findings.push(Finding::new(
                "cpa_management_api_disabled",
                Severity::Error,
                format!(
                    "CPA at {base} answered 404 to GET /v0/management/config: the management API is off, or the \
                     URL is not CPA."
                ),
                "Set remote-management.secret-key in CPA's config.yaml and point the CPA URL at CPA's API port \
                 (default 8317).",
            ));
            return report;
        }
        _ => {
            findings.push(Finding::new(
                "cpa_management_api_failed",
                Severity::Error,
                format!(
                    "CPA at {base} answered {} to GET /v0/management/config: {}",
                    reply.status,
                    body_text(&reply.body)
                ),
                "Check CPA's logs and that the CPA URL points at CPA itself.",
            ));
            return report;
        }
    }
    report.key_accepted = true;
    let config: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    let publishing = config_bool(
        &config,
        &["usage-statistics-enabled", "usageStatisticsEnabled"],
    );
    let retention = config_int(
        &config,
        &[
            "redis-usage-queue-retention-seconds",
            "redisUsageQueueRetentionSeconds",
        ],
    );
    report.usage_statistics_enabled = publishing;
    report.retention_seconds = retention;
    facts.retention_secs = retention;

    if publishing == Some(false) {
        findings.push(Finding::new(
            "usage_publishing_disabled",
            Severity::Error,
            format!("CPA at {base} reports usage-statistics-enabled: false, so it publishes no usage events."),
            "Set usage-statistics-enabled: true in CPA's config.yaml, or PUT {\"value\":true} to \
             /v0/management/usage-statistics-enabled with the CPA Management Key.",
        ));
    }
    check_version(version.as_deref(), &input.plan, findings);
    let retention_secs = retention.unwrap_or(DEFAULT_RETENTION_SECS);
    let poll_ms = u64::try_from(input.plan.poll_interval.as_millis()).unwrap_or(u64::MAX);
    if retention_secs > 0
        && poll_ms
            > u64::try_from(retention_secs)
                .unwrap_or(0)
                .saturating_mul(1000)
    {
        findings.push(Finding::new(
            "poll_interval_exceeds_retention",
            Severity::Error,
            format!(
                "The poll interval is {poll_ms} ms but CPA keeps queued events only {retention_secs} s \
                 (redis-usage-queue-retention-seconds), so events expire between polls."
            ),
            "Lower USAGE_POLL_INTERVAL_MS (or pollIntervalMs in the panel) below the retention, or raise CPA's \
             redis-usage-queue-retention-seconds (max 3600).",
        ));
    } else if retention_secs <= 0 {
        findings.push(Finding::new(
            "cpa_usage_retention_invalid",
            Severity::Error,
            format!("CPA reports redis-usage-queue-retention-seconds = {retention_secs}."),
            "Set redis-usage-queue-retention-seconds in CPA to a positive number of seconds (60 by default, at \
             most 3600).",
        ));
    }
    let mode = input.plan.mode.as_str();
    if (mode == "resp" || mode == "subscribe") && !target.tls {
        match probe_resp(&target, connection.management_key.expose()).await {
            RespProbe::Http => findings.push(resp_over_http_finding(
                base,
                mode,
                "a RESP AUTH sent to it was answered with HTTP",
            )),
            RespProbe::Resp | RespProbe::Failed => {}
        }
    }
    report
}

fn unreachable_finding(base: &str, target: &Target, error: &str, in_container: bool) -> Finding {
    let mut finding = Finding::new(
        "cpa_unreachable",
        Severity::Error,
        format!("CPA at {base} cannot be reached from this server: {error}."),
        if in_container {
            "Use a CPA URL that is reachable from inside this container, for example \
             http://cli-proxy-api:8317 on a shared Docker network."
        } else {
            "Use a CPA URL that is reachable from this host, and check that CPA is running and listens there."
        },
    );
    match (in_container, target.is_loopback()) {
        (true, true) => {
            finding.hints.push(
                "Inside a Docker container 127.0.0.1 and localhost mean the container itself, not the host \
                 running CPA."
                    .to_string(),
            );
            finding.hints.push(
                "If CPA runs on the Linux host, start cpamp with --add-host=host.docker.internal:host-gateway \
                 and use http://host.docker.internal:8317 as the CPA URL."
                    .to_string(),
            );
        }
        (false, true) => finding.hints.push(format!(
            "Nothing answers at {base} on this host: start CPA, or use the address and port from its config \
             (`host` and `port`, 8317 by default)."
        )),
        _ => {}
    }
    if in_container {
        finding.hints.push(format!(
            "Test from inside the container: docker exec -it cpa-manager-plus sh, then wget -qO- {base}/healthz"
        ));
    } else {
        finding
            .hints
            .push(format!("Test from this host: curl {base}/healthz"));
    }
    finding
}

fn resp_over_http_finding(base: &str, mode: &str, seen: &str) -> Finding {
    Finding::new(
        "resp_through_http_proxy",
        Severity::Error,
        format!(
            "Collector mode is {mode} but {base} is an HTTP endpoint: {seen}. RESP cannot pass through a normal \
             HTTP reverse proxy."
        ),
        "Set USAGE_COLLECTOR_MODE=auto (or http), or point the CPA URL directly at CPA's API port such as \
         http://cli-proxy-api:8317 instead of a reverse-proxy domain.",
    )
}

fn check_version(version: Option<&str>, plan: &CollectorPlan, findings: &mut Vec<Finding>) {
    let Some(text) = version else {
        return;
    };
    let Some(parsed) = parse_version(text) else {
        findings.push(Finding::new(
            "cpa_version_unknown",
            Severity::Info,
            format!("CPA reports version {text:?}, which is not a release number."),
            "Run a CPA release (v7.1.39 or newer) so its features can be relied on.",
        ));
        return;
    };
    if parsed < MIN_HTTP_QUEUE_VERSION {
        let severity = if plan.mode == "http" {
            Severity::Error
        } else {
            Severity::Warning
        };
        findings.push(Finding::new(
            "cpa_too_old_for_http_queue",
            severity,
            format!("CPA reports version {text}; the HTTP usage queue needs v6.10.8 or newer."),
            "Upgrade CPA to v7.1.39 or newer (at least v6.10.8 for the HTTP usage queue).",
        ));
    } else if parsed < RECOMMENDED_VERSION {
        findings.push(Finding::new(
            "cpa_too_old_for_metadata",
            Severity::Warning,
            format!(
                "CPA reports version {text}; the current request metadata (executor type, credential refresh \
                 notifications) needs v7.1.39 or newer."
            ),
            "Upgrade CPA to v7.1.39 or newer.",
        ));
    }
}

/// `v7.2.140`, `7.2.140`, `v7.2.140-3-g1a2b3c4-dirty` -> (7, 2, 140); `dev` -> None.
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let text = text.trim().trim_start_matches(['v', 'V']);
    let mut parts = text.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch_text = parts.next()?;
    let digits: String = patch_text
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor, digits.parse().ok()?))
}

fn check_collector(collector: &CollectorStatus, input: &DoctorInput, findings: &mut Vec<Finding>) {
    let base = collector.upstream.as_str();
    let saw_http = collector.warnings.iter().any(|w| w == RESP_OVER_HTTP_HINT)
        || collector.last_error.contains("unsupported RESP prefix 'H'");
    if saw_http && !findings.iter().any(|f| f.code == "resp_through_http_proxy") {
        findings.push(resp_over_http_finding(
            base,
            &collector.mode,
            &format!("the collector reported \"{}\"", collector.last_error),
        ));
    }
    if let Some(warning) = collector
        .warnings
        .iter()
        .find(|warning| warning.starts_with(OTHER_CONSUMER_PREFIX))
    {
        findings.push(Finding::new(
            "another_consumer_suspected",
            Severity::Warning,
            warning.clone(),
            "Run exactly one consumer per CPA: stop the other Manager Server or Redis client that pops this CPA's \
             usage queue.",
        ));
    }
    // The collector keeps the store's error in `store_error` (and the held items in
    // `pending_items`) until a batch commits; a RESP pop reply error also starts with
    // `consume:` but is not the store's.
    let store_failing = collector.pending_items > 0 || !collector.store_error.is_empty();
    if collector.last_consumed_at_ms > 0
        && collector.last_consumed_at_ms > collector.last_inserted_at_ms
        && store_failing
    {
        let (cause, fix) = classify_store_error(if collector.store_error.is_empty() {
            &collector.last_error
        } else {
            &collector.store_error
        });
        findings.push(Finding::new(
            "consumed_not_inserted",
            Severity::Error,
            format!(
                "lastConsumedAt ({}) advances but lastInsertedAt ({}) does not: events are read from CPA but \
                 SQLite writes fail ({cause}); {} events are held (in memory or the collector inbox){}.",
                format_ms(collector.last_consumed_at_ms),
                if collector.last_inserted_at_ms > 0 {
                    format_ms(collector.last_inserted_at_ms)
                } else {
                    "never".to_string()
                },
                collector.pending_items,
                if collector.last_error.is_empty() {
                    String::new()
                } else {
                    format!("; last error: {}", collector.last_error)
                }
            ),
            fix,
        ));
    } else if collector.state == CollectorState::Error
        && !collector.last_error.is_empty()
        && !findings.iter().any(|f| f.severity == Severity::Error)
    {
        findings.push(Finding::new(
            "collector_error",
            Severity::Error,
            format!("The collector is failing: {}", collector.last_error),
            "Fix the cause named in the error; the collector retries on its own with backoff.",
        ));
    }
    if input.connection.is_some()
        && input.plan.enabled
        && collector.state == CollectorState::Stopped
        && collector.upstream.is_empty()
    {
        findings.push(Finding::new(
            "collector_not_started",
            Severity::Warning,
            "A CPA connection exists but the collector has not started.".to_string(),
            "Turn Request Monitoring on in /management.html (or save the connection again) to start collecting.",
        ));
    }
}

/// Names the likely cause of a failing SQLite write and its fix.
fn classify_store_error(error: &str) -> (&'static str, &'static str) {
    let lower = error.to_ascii_lowercase();
    if lower.contains("disk is full") || lower.contains("no space") {
        (
            "the disk is full",
            "Free disk space on the volume holding the data directory, then the held events are stored.",
        )
    } else if lower.contains("readonly")
        || lower.contains("read-only")
        || lower.contains("permission")
    {
        (
            "the database is read-only",
            "Make the data directory and usage.sqlite* writable by the user cpamp runs as, and check that /data \
             is mounted read-write.",
        )
    } else if lower.contains("locked") || lower.contains("busy") {
        (
            "another process holds a write lock on the database",
            "Stop the other process writing to usage.sqlite (backup tool, sqlite3 shell, a second server) so \
             cpamp can write again.",
        )
    } else {
        (
            "the store refuses writes",
            "Check disk space, file permissions and that /data is mounted, then the held events are stored.",
        )
    }
}

fn check_gaps(
    gaps: &[CollectionGap],
    retention_secs: i64,
    now_ms: i64,
    findings: &mut Vec<Finding>,
) {
    let retention_ms = retention_secs.max(1).saturating_mul(1000);
    let mut reported = 0;
    for gap in gaps {
        let end = gap.end_ms.unwrap_or(now_ms);
        let duration = end.saturating_sub(gap.start_ms);
        if duration <= retention_ms || reported >= 5 {
            continue;
        }
        reported += 1;
        let ended = match gap.end_ms {
            Some(end) => format!("until {}", format_ms(end)),
            None => "and is still open".to_string(),
        };
        let what = match gap.cause.as_str() {
            "server_down" => "the Manager Server was not running",
            "cpa_unreachable" => "CPA could not be reached",
            "auth_rejected" => "CPA rejected the management key",
            "store_failed" => "events could not be stored",
            _ => "the collector was failing",
        };
        let mut finding = Finding::new(
            "queue_retention_gap",
            Severity::Warning,
            format!(
                "Collection stopped from {} {ended} ({} s) because {what}; that is longer than CPA's queue \
                 retention of {retention_secs} s, so events from that period were probably lost.",
                format_ms(gap.start_ms),
                duration / 1000
            ),
            "Keep the Manager Server running continuously, and raise CPA's redis-usage-queue-retention-seconds \
             (max 3600) to cover restarts.",
        );
        finding.gap = Some(GapRef {
            start_ms: gap.start_ms,
            end_ms: gap.end_ms,
        });
        findings.push(finding);
    }
}

fn check_data_dir(input: &DoctorInput, findings: &mut Vec<Finding>) {
    if input.counts.events > 0 {
        return;
    }
    let data_dir = input.host.data_dir.display().to_string();
    if let Some((path, size)) = input
        .host
        .volume_hints
        .iter()
        .find(|(_, size)| *size > VOLUME_HINT_MIN_BYTES)
    {
        findings.push(Finding::new(
            "data_dir_not_mounted",
            Severity::Warning,
            format!(
                "This server's database in {data_dir} has no events, but {} ({size} bytes) exists: {}",
                path.display(),
                if input.host.in_container {
                    "the expected data volume is probably not mounted here."
                } else {
                    "the server probably runs with another data directory than before."
                }
            ),
            if input.host.in_container {
                "Mount the volume that holds your data at the data directory (for example -v \
                 cpa-manager-plus-data:/data, or the old cpa-manager-data volume), or copy the old data in."
            } else {
                "Point USAGE_DATA_DIR (or USAGE_DB_PATH) at the directory that holds your data, or stop the server \
                 and copy that data directory over this one."
            },
        ));
    } else if input.host.in_container && !input.host.data_dir_is_mount {
        findings.push(Finding::new(
            "data_dir_not_mounted",
            Severity::Warning,
            format!(
                "The data directory {data_dir} is not a mounted volume and holds no events: everything stored \
                 here is lost when the container is removed."
            ),
            "Run the container with -v cpa-manager-plus-data:/data so the database survives upgrades.",
        ));
    }
}

enum RespProbe {
    Resp,
    Http,
    Failed,
}

/// Sends `AUTH <key>` and looks at the first byte of the reply. Only called after CPA
/// accepted the key over HTTP, so it cannot count as a failed login.
async fn probe_resp(target: &Target, key: &str) -> RespProbe {
    let probe = async {
        let mut io = cpa_http::dial(target).await.ok()?;
        let command = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{key}\r\n", key.len());
        io.write_all(command.as_bytes()).await.ok()?;
        let mut first = [0u8; 4];
        let read = io.read(&mut first).await.ok()?;
        let _ = io.write_all(b"*1\r\n$4\r\nQUIT\r\n").await;
        Some(first[..read].to_vec())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Some(bytes)) if bytes.starts_with(b"HTTP") || bytes.first() == Some(&b'H') => {
            RespProbe::Http
        }
        Ok(Some(bytes)) if !bytes.is_empty() => RespProbe::Resp,
        _ => RespProbe::Failed,
    }
}

fn config_bool(config: &serde_json::Value, keys: &[&str]) -> Option<bool> {
    keys.iter().find_map(|key| match config.get(*key)? {
        serde_json::Value::Bool(value) => Some(*value),
        serde_json::Value::String(text) => Some(matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )),
        _ => None,
    })
}

fn config_int(config: &serde_json::Value, keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|key| match config.get(*key)? {
        serde_json::Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().map(|value| value as i64)),
        serde_json::Value::String(text) => text.trim().parse().ok(),
        _ => None,
    })
}

fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text.to_string()
    }
}

/// RFC 3339 UTC text of a Unix ms timestamp.
pub fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|timestamp| timestamp.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use cpamp_domain::ports::GapCause;

    fn input() -> DoctorInput {
        DoctorInput {
            connection: None,
            collector: None,
            plan: CollectorPlan {
                mode: "auto".to_string(),
                poll_interval: Duration::from_millis(500),
                enabled: true,
            },
            host: HostFacts::default(),
            counts: StoreCounts::default(),
            gaps: Vec::new(),
            automation: AutomationFacts::default(),
            now_ms: 1_767_225_600_000,
        }
    }

    #[test]
    fn versions_parse_like_cpa_prints_them() {
        assert_eq!(parse_version("7.2.140"), Some((7, 2, 140)));
        assert_eq!(parse_version("v6.10.8"), Some((6, 10, 8)));
        assert_eq!(
            parse_version("v7.2.140-3-g1a2b3c4-dirty"),
            Some((7, 2, 140))
        );
        assert_eq!(parse_version("dev"), None);
        assert!(parse_version("6.10.7").unwrap() < MIN_HTTP_QUEUE_VERSION);
        assert!(parse_version("7.1.38").unwrap() < RECOMMENDED_VERSION);
    }

    #[test]
    fn old_versions_are_named_with_their_thresholds() {
        let mut findings = Vec::new();
        check_version(Some("6.10.7"), &input().plan, &mut findings);
        assert_eq!(findings[0].code, "cpa_too_old_for_http_queue");
        let mut findings = Vec::new();
        check_version(Some("v7.1.38"), &input().plan, &mut findings);
        assert_eq!(findings[0].code, "cpa_too_old_for_metadata");
        let mut findings = Vec::new();
        check_version(Some("7.1.39"), &input().plan, &mut findings);
        assert!(findings.is_empty());
    }

    #[tokio::test]
    async fn no_connection_is_manager_not_configured() {
        let (diagnosis, _) = diagnose(&input()).await;
        assert!(!diagnosis.ok);
        assert_eq!(diagnosis.findings[0].code, "manager_not_configured");
    }

    #[tokio::test]
    async fn a_gap_longer_than_retention_is_reported_with_its_bounds() {
        let mut input = input();
        input.connection = None;
        input.gaps = vec![
            CollectionGap {
                id: 2,
                start_ms: 1_000_000,
                end_ms: Some(1_030_000),
                cause: GapCause::CpaUnreachable,
                detail: String::new(),
            },
            CollectionGap {
                id: 1,
                start_ms: 0,
                end_ms: Some(120_000),
                cause: GapCause::ServerDown,
                detail: String::new(),
            },
        ];
        let (diagnosis, _) = diagnose(&input).await;
        let gaps: Vec<&Finding> = diagnosis
            .findings
            .iter()
            .filter(|finding| finding.code == "queue_retention_gap")
            .collect();
        // 30 s is within the default 60 s retention; 120 s is not.
        assert_eq!(gaps.len(), 1);
        assert_eq!(
            gaps[0].gap,
            Some(GapRef {
                start_ms: 0,
                end_ms: Some(120_000)
            })
        );
        assert!(gaps[0].observed.contains("not running"));
    }

    #[test]
    fn store_errors_name_their_cause() {
        assert_eq!(
            classify_store_error(
                "consume: database unavailable: commit batch: database or disk is full"
            )
            .0,
            "the disk is full"
        );
        assert_eq!(
            classify_store_error("consume: attempt to write a readonly database").0,
            "the database is read-only"
        );
        assert_eq!(
            classify_store_error("consume: database is locked").0,
            "another process holds a write lock on the database"
        );
    }

    #[tokio::test]
    async fn an_empty_database_next_to_a_filled_one_points_at_the_mount() {
        let mut input = input();
        input.host.data_dir = "/data".into();
        input.host.volume_hints = vec![
            ("/srv/empty/usage.sqlite".into(), 200 * 1024),
            ("/srv/cpamp/data/usage.sqlite".into(), 64 * 1024 * 1024),
        ];
        let (diagnosis, _) = diagnose(&input).await;
        let finding = diagnosis
            .findings
            .iter()
            .find(|finding| finding.code == "data_dir_not_mounted")
            .unwrap();
        assert!(finding.observed.contains("/srv/cpamp/data/usage.sqlite"));
        assert!(
            finding.fix.contains("USAGE_DATA_DIR"),
            "native advice: {}",
            finding.fix
        );
        assert!(!finding.fix.contains("-v ") && !finding.observed.contains("volume"));

        input.host.in_container = true;
        let (diagnosis, _) = diagnose(&input).await;
        let finding = diagnosis
            .findings
            .iter()
            .find(|finding| finding.code == "data_dir_not_mounted")
            .unwrap();
        assert!(
            finding.fix.contains("-v cpa-manager-plus-data:/data"),
            "{}",
            finding.fix
        );

        input.counts.events = 1;
        let (diagnosis, _) = diagnose(&input).await;
        assert!(
            diagnosis
                .findings
                .iter()
                .all(|f| f.code != "data_dir_not_mounted")
        );
    }

    #[tokio::test]
    async fn container_advice_appears_only_inside_a_container() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let mut input = input();
        input.connection = Some(CpaTarget {
            base_url: base.clone(),
            management_key: Secret::new("key"),
        });
        input.host.data_dir = "/srv/cpamp".into();
        let native = serde_json::to_string(&diagnose(&input).await.0).unwrap();
        assert!(native.contains("cpa_unreachable"), "{native}");
        assert!(native.contains(&format!("curl {base}/healthz")), "{native}");
        for container_word in ["container", "docker", "host.docker.internal", "volume"] {
            assert!(
                !native.to_lowercase().contains(container_word),
                "native diagnosis speaks of {container_word}: {native}"
            );
        }

        input.host.in_container = true;
        let contained = serde_json::to_string(&diagnose(&input).await.0).unwrap();
        assert!(
            contained.contains("host.docker.internal:host-gateway"),
            "{contained}"
        );
        assert!(
            contained.contains("docker exec -it cpa-manager-plus sh"),
            "{contained}"
        );
        assert!(contained.contains("is not a mounted volume"), "{contained}");
    }
}
