//! What the server knows about itself at run time, for `/status`, `/metrics` and the
//! doctor: the collector's live status, the collector settings in force, where the data
//! lives, what was last learned about CPA, and HTTP request counts.
//!
//! Registered once as `web::Data<Monitor>` beside the `AppState`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpamp_domain::Secret;
use serde_json::value::RawValue;

use crate::doctor::Diagnosis;

/// Facts fixed at startup.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The data directory (`USAGE_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Whether this process runs inside a container (Docker, Podman, Kubernetes).
    pub in_container: bool,
    /// Whether the data directory is its own mount point (a mounted volume).
    pub data_dir_is_mount: bool,
    /// Other places where a cpamp database usually lives, with their sizes, for the
    /// "fresh empty data directory next to a filled one" check.
    pub volume_hints: Vec<(PathBuf, u64)>,
}

/// The collector settings in force.
#[derive(Debug, Clone)]
pub struct CollectorPlan {
    /// `auto`, `subscribe`, `http` or `resp`.
    pub mode: String,
    /// Wait after an empty pop.
    pub poll_interval: Duration,
    /// False when request monitoring is switched off or no connection exists.
    pub enabled: bool,
}

/// What the last probe learned about CPA.
#[derive(Debug, Clone, Default)]
pub struct CpaFacts {
    /// `redis-usage-queue-retention-seconds` (None until CPA answered).
    pub retention_secs: Option<i64>,
    /// CPA's version, when it reported one.
    pub version: Option<String>,
}

/// Shared monitoring state. Cheap to read; every lock is held only to copy a value.
pub struct Monitor {
    /// What is known about the host (container, data directory).
    pub host: HostFacts,
    /// `METRICS_TOKEN`: a second credential accepted by `/metrics` only.
    pub metrics_token: Secret,
    cpa: Mutex<CpaFacts>,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// The last diagnosis, when it was made, and its JSON (what `/status` answers).
    diagnosis: Mutex<Option<(Instant, Diagnosis, std::sync::Arc<RawValue>)>>,
    /// True while a diagnosis is being made in the background.
    refreshing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Monitor { .. }")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Monitor {
    /// Monitoring state for this host, with `METRICS_TOKEN` (empty: none).
    pub fn new(host: HostFacts, metrics_token: Secret) -> Monitor {
        Monitor {
            host,
            metrics_token,
            cpa: Mutex::new(CpaFacts::default()),
            requests: Mutex::new(BTreeMap::new()),
            diagnosis: Mutex::new(None),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What the last probe learned about CPA.
    pub fn cpa_facts(&self) -> CpaFacts {
        lock(&self.cpa).clone()
    }

    /// Keeps what a probe learned about CPA.
    pub fn set_cpa_facts(&self, facts: CpaFacts) {
        *lock(&self.cpa) = facts;
    }

    /// Counts one answered HTTP request.
    pub fn count_request(&self, route: &str, method: &str, status: u16) {
        *lock(&self.requests)
            .entry((route.to_string(), method.to_string(), status))
            .or_insert(0) += 1;
    }

    /// `(route, method, status) -> count`, sorted.
    pub fn request_counts(&self) -> Vec<((String, String, u16), u64)> {
        lock(&self.requests)
            .iter()
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }

    /// The cached diagnosis if it is younger than `max_age`.
    pub fn cached_diagnosis(&self, max_age: Duration) -> Option<Diagnosis> {
        lock(&self.diagnosis)
            .as_ref()
            .filter(|(at, _, _)| at.elapsed() < max_age)
            .map(|(_, diagnosis, _)| diagnosis.clone())
    }

    /// The JSON of the cached diagnosis if it is younger than `max_age` (shared, not
    /// copied).
    pub fn cached_diagnosis_json(&self, max_age: Duration) -> Option<std::sync::Arc<RawValue>> {
        lock(&self.diagnosis)
            .as_ref()
            .filter(|(at, _, _)| at.elapsed() < max_age)
            .map(|(_, _, json)| json.clone())
    }

    /// The last diagnosis, however old.
    pub fn last_diagnosis(&self) -> Option<Diagnosis> {
        lock(&self.diagnosis)
            .as_ref()
            .map(|(_, diagnosis, _)| diagnosis.clone())
    }

    /// The JSON of the last diagnosis, however old.
    pub fn last_diagnosis_json(&self) -> Option<std::sync::Arc<RawValue>> {
        lock(&self.diagnosis)
            .as_ref()
            .map(|(_, _, json)| json.clone())
    }

    /// Claims the one background refresh of the diagnosis; false when one is running.
    /// The claimer calls [`Monitor::refreshed`] when done.
    pub fn begin_refresh(&self) -> bool {
        !self
            .refreshing
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Ends the background refresh claimed with [`Monitor::begin_refresh`].
    pub fn refreshed(&self) {
        self.refreshing
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Caches a fresh diagnosis.
    pub fn store_diagnosis(&self, diagnosis: Diagnosis) {
        let json = diagnosis_json(&diagnosis);
        *lock(&self.diagnosis) = Some((Instant::now(), diagnosis, json));
    }
}

/// A diagnosis as `/status` shows it, written once: members sorted, as in every
/// answer before.
pub fn diagnosis_json(diagnosis: &Diagnosis) -> std::sync::Arc<RawValue> {
    // Through a JSON tree, whose objects keep their members sorted.
    let text = serde_json::to_value(diagnosis)
        .and_then(|value| serde_json::to_string(&value))
        .unwrap_or_else(|_| "null".to_string());
    RawValue::from_string(text)
        .map(std::sync::Arc::from)
        .unwrap_or_else(|_| std::sync::Arc::from(RawValue::NULL.to_owned()))
}

/// Whether this process serves as a container's main process (Docker, Podman,
/// Kubernetes): a container marker is present and PID 1 is cpamp itself or a container
/// init. cpamp started by hand inside some other container (a development container) is
/// treated as a native run: that container's lifecycle is not its data's, and the
/// doctor's container advice would mislead.
pub fn detect_container() -> bool {
    let markers = std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::fs::read_to_string("/proc/1/cgroup")
            .is_ok_and(|text| text.contains("docker") || text.contains("kubepods"));
    let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    markers && is_container_main(std::process::id(), pid1.trim())
}

/// PID 1 names (`/proc/1/comm`, at most 15 bytes) that make cpamp a container's service:
/// itself (also as `cpa-manager-plus`) or an init that container runtimes put in front.
const CONTAINER_MAIN: &[&str] = &[
    "cpamp-server",
    "cpa-manager-plu",
    "docker-init",
    "tini",
    "dumb-init",
    "catatonit",
];

/// True when this process (`own_pid`) is PID 1 or PID 1 is one of the container init processes in `CONTAINER_MAIN`.
pub fn is_container_main(own_pid: u32, pid1_comm: &str) -> bool {
    own_pid == 1 || CONTAINER_MAIN.contains(&pid1_comm)
}

/// True when `dir` is listed as a mount point in `/proc/self/mountinfo`.
pub fn is_mount_point(dir: &std::path::Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(dir) else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    text.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mount| unescape_mount(mount) == canonical.as_os_str().to_string_lossy())
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(text: &str) -> String {
    text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_container_whose_main_process_is_cpamp_counts() {
        assert!(is_container_main(1, "cpamp-server"));
        assert!(
            is_container_main(7, "cpamp-server"),
            "doctor run with docker exec"
        );
        assert!(is_container_main(7, "cpa-manager-plu"));
        assert!(is_container_main(7, "docker-init"), "docker run --init");
        assert!(
            !is_container_main(4242, "process_api"),
            "a development container"
        );
        assert!(
            !is_container_main(4242, "systemd"),
            "a host or a system container"
        );
    }
}
