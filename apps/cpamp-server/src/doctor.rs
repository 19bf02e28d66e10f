//! `cpamp-server doctor`: the FAQ's "Monitoring has no data" checklist, run from this
//! host's network position (inside the container when run with `docker exec`).
//!
//! With the server running, the live server's `/status` diagnosis is printed: it knows
//! the collector's state, the saved connection and the gaps. With the server stopped, the
//! doctor checks offline what it can read: the env-managed connection, the database and
//! the recorded gaps.

use std::process::ExitCode;
use std::time::Duration;

use cpamp_api::cpa_http;
use cpamp_api::doctor::{CpaTarget, Diagnosis, DoctorInput, Finding, Severity, diagnose};
use cpamp_api::monitor::CollectorPlan;
use cpamp_domain::ports::{GapStore, StoreStats};
use cpamp_storage::{Options, SqliteStore};
use serde_json::Value;

use crate::config::{self, Settings};
use crate::{lock, startup};

/// Runs the doctor; exit code 0 without errors, 1 with error findings, 2 when it could
/// not run.
pub fn run(admin_key: Option<String>, server_url: Option<String>, json: bool) -> ExitCode {
    let settings = match config::load(&config::Sources::from_process(false)) {
        Ok(settings) => {
            for warning in &settings.warnings {
                eprintln!("warning: configuration: {warning}");
            }
            settings
        }
        Err(error) => {
            eprintln!("doctor: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("doctor: start runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let held = lock::acquire(&settings.db_path);
        let outcome = match held {
            Err(error) if lock::held_elsewhere(&error) => {
                live(&settings, admin_key, server_url).await
            }
            Err(error) => Err(format!("{error:#}")),
            Ok(_lock) => offline(&settings).await,
        };
        match outcome {
            Ok((header, diagnosis)) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&diagnosis).unwrap_or_default()
                    );
                } else {
                    print!("{}", render(&header, &diagnosis));
                }
                let ok = diagnosis
                    .get("ok")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(error) => {
                eprintln!("doctor: {error}");
                ExitCode::from(2)
            }
        }
    })
}

/// Asks the running server for its diagnosis.
async fn live(
    settings: &Settings,
    admin_key: Option<String>,
    server_url: Option<String>,
) -> Result<(String, Value), String> {
    let key = crate::remote::admin_key(settings, admin_key, "the doctor")?;
    let url = crate::remote::server_url(settings, server_url);
    let reply = cpa_http::exchange(
        &url,
        http::Method::GET,
        "/status",
        Some(key.trim()),
        None,
        Duration::from_secs(30),
    )
    .await
    .map_err(|error| {
        format!("the server holds the database lock but {url}/status failed: {error}")
    })?;
    if reply.status.as_u16() == 401 {
        return Err("the running server refused the admin key (401); pass the CPAMP Admin Key, not the CPA Management Key".to_string());
    }
    if !reply.status.is_success() {
        return Err(format!("{url}/status answered {}", reply.status));
    }
    let status: Value = serde_json::from_slice(&reply.body)
        .map_err(|error| format!("{url}/status did not answer JSON: {error}"))?;
    let collector = &status["collector"];
    let header = format!(
        "cpamp doctor: live server at {url}\ncollector: {} (mode {}, transport {}), lastConsumedAt {}, lastInsertedAt {}, events {}\n",
        collector["collector"].as_str().unwrap_or("?"),
        collector["mode"].as_str().unwrap_or("?"),
        collector["transport"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or("none"),
        collector["lastConsumedAt"],
        collector["lastInsertedAt"],
        status["eventCount"],
    );
    Ok((header, status["diagnosis"].clone()))
}

/// Checks what can be checked with the server stopped.
async fn offline(settings: &Settings) -> Result<(String, Value), String> {
    let db_path = &settings.db_path;
    let mut extra = Vec::new();
    let (counts, gaps) = if db_path.is_file() {
        let store = SqliteStore::open(Options::new(db_path))
            .await
            .map_err(|error| format!("open {}: {error}", db_path.display()))?;
        let counts = store.counts().await.map_err(|error| error.to_string())?;
        let gaps = store
            .gaps(i64::MIN, i64::MAX, 50)
            .await
            .map_err(|error| error.to_string())?;
        store.close().await;
        (counts, gaps)
    } else {
        extra.push(Finding {
            code: "database_missing",
            severity: Severity::Warning,
            observed: format!(
                "There is no database at {}: the server has not run with this data directory yet.",
                db_path.display()
            ),
            fix: "Check USAGE_DATA_DIR / the -v ...:/data mount, then start the server."
                .to_string(),
            hints: Vec::new(),
            gap: None,
        });
        (Default::default(), Vec::new())
    };
    let connection = settings.env_managed_connection().then(|| CpaTarget {
        base_url: settings.cpa_upstream_url.clone(),
        management_key: settings.cpa_management_key.clone(),
    });
    let saved_connection_unchecked = connection.is_none();
    let input = DoctorInput {
        connection,
        collector: None,
        plan: CollectorPlan {
            mode: settings.collector_mode.as_str().to_string(),
            poll_interval: settings.poll_interval,
            enabled: true,
        },
        host: startup::host_facts(settings, db_path),
        counts,
        gaps,
        now_ms: startup::now_ms(),
    };
    let (mut diagnosis, _) = diagnose(&input).await;
    if saved_connection_unchecked {
        // A connection saved through the panel is sealed with the data key and is checked
        // by the running server; offline only the environment is known.
        diagnosis
            .findings
            .retain(|finding| finding.code != "manager_not_configured");
        extra.push(Finding {
            code: "server_not_running",
            severity: Severity::Warning,
            observed: "The Manager Server is not running and no CPA_UPSTREAM_URL is set, so the saved CPA \
                       connection and the collector cannot be checked."
                .to_string(),
            fix: "Start the server and run `cpamp-server doctor --admin-key <CPAMP Admin Key>` again.".to_string(),
            hints: Vec::new(),
            gap: None,
        });
    }
    diagnosis.findings.extend(extra);
    diagnosis.ok = !diagnosis
        .findings
        .iter()
        .any(|finding| finding.severity == Severity::Error);
    let header = format!(
        "cpamp doctor: server not running; offline checks of {}\n",
        db_path.display()
    );
    Ok((header, diagnosis_value(&diagnosis)))
}

fn diagnosis_value(diagnosis: &Diagnosis) -> Value {
    serde_json::to_value(diagnosis).unwrap_or_default()
}

/// Human-readable report.
fn render(header: &str, diagnosis: &Value) -> String {
    let mut out = String::from(header);
    if let Some(cpa) = diagnosis.get("cpa").filter(|cpa| cpa.is_object()) {
        out.push_str(&format!(
            "CPA {}: reachable {}, key accepted {}, version {}, usage publishing {}, retention {} s\n",
            cpa["url"].as_str().unwrap_or("?"),
            cpa["reachable"],
            cpa["keyAccepted"],
            cpa["version"].as_str().unwrap_or("unknown"),
            cpa.get("usageStatisticsEnabled")
                .map_or("unknown".to_string(), Value::to_string),
            cpa.get("retentionSeconds")
                .map_or("unknown".to_string(), Value::to_string),
        ));
    }
    let findings = diagnosis
        .get("findings")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if findings.is_empty() {
        out.push_str("No problems found.\n");
    }
    for finding in findings {
        out.push_str(&format!(
            "\n[{}] {}\n  observed: {}\n  fix: {}\n",
            finding["severity"].as_str().unwrap_or("?").to_uppercase(),
            finding["code"].as_str().unwrap_or("?"),
            finding["observed"].as_str().unwrap_or(""),
            finding["fix"].as_str().unwrap_or(""),
        ));
        for hint in finding["hints"].as_array().into_iter().flatten() {
            out.push_str(&format!("  hint: {}\n", hint.as_str().unwrap_or("")));
        }
    }
    out
}
