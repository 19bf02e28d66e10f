//! Thread priorities: answering requests before computing analytics.
//!
//! The HTTP workers share the cores with analytics computations (the analytics runtime
//! and the SQLite threads that run their reads). Under a burst of panel refreshes those
//! computations are runnable all the time, and a `/status` or `/health` request waited
//! behind them for the CPU. Their threads run [`BACKGROUND_OFFSET`] nice levels below the
//! server's own priority (at most 19; a server started with `nice` or a service
//! manager's `Nice=` keeps the same distance), so the scheduler
//! gives the HTTP workers the CPU first while the computations still use whatever is
//! left. The collector and the store's batch writes keep the default priority: ingest
//! has to keep up with CPA, which drops what is not popped in time.
//!
//! Lowering a thread's own priority needs no privilege. Threads are found by name in
//! `/proc/self/task` (a thread inherits its creator's priority, but the read pool opens
//! connections from whichever thread asks first), once at start and then every
//! [`RESCAN`]. Linux only; elsewhere nothing changes.

use std::time::Duration;

/// How many nice levels below the server's own priority background threads run (0 is
/// the default priority, 19 the lowest).
pub const BACKGROUND_OFFSET: i32 = 10;

/// The lowest priority (highest nice value) a thread can have.
const LOWEST_NICE: i32 = 19;

/// The nice value background threads get: [`BACKGROUND_OFFSET`] below the process's
/// main thread, at most the lowest priority.
pub fn background_nice() -> i32 {
    #[cfg(target_os = "linux")]
    {
        let own =
            rustix::process::getpriority_process(Some(rustix::process::getpid())).unwrap_or(0);
        (own + BACKGROUND_OFFSET).min(LOWEST_NICE)
    }
    #[cfg(not(target_os = "linux"))]
    {
        BACKGROUND_OFFSET
    }
}

/// How often threads started since the last pass are looked for.
pub const RESCAN: Duration = Duration::from_secs(5);

/// Name prefixes of the background threads. Linux shows at most 15 bytes of a name.
pub const BACKGROUND_THREADS: [&str; 2] = [ANALYTICS_THREAD, cpamp_storage::READER_THREAD_PREFIX];

/// The name of the analytics runtime's threads.
pub const ANALYTICS_THREAD: &str = "analytics";

/// Whether a thread named `name` (as `/proc` shows it) is a background thread.
pub fn is_background(name: &str) -> bool {
    BACKGROUND_THREADS.iter().any(|prefix| {
        let shown = &prefix[..prefix.len().min(15)];
        name.starts_with(shown)
    })
}

/// Lowers every background thread of this process to [`background_nice`]; returns how
/// many it changed. A thread already at that priority (or lower) is left alone.
pub fn lower_background_threads() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        let target = background_nice();
        let mut changed = 0;
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|tid| tid.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            if !is_background(name.trim_end()) {
                continue;
            }
            let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
            if current < target && rustix::process::setpriority_process(Some(tid), target).is_ok() {
                changed += 1;
            }
        }
        changed
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Lowers the background threads now and then every [`RESCAN`] until the runtime stops.
pub fn keep_background_threads_low() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(RESCAN);
        loop {
            ticks.tick().await;
            let changed = tokio::task::spawn_blocking(lower_background_threads)
                .await
                .unwrap_or(0);
            if changed > 0 {
                tracing::debug!(changed, "lowered the priority of background threads");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_threads_are_known_by_their_shown_names() {
        assert!(is_background("analytics"));
        assert!(is_background("sqlite-reader-1"));
        assert!(!is_background("actix-server wo"));
        assert!(!is_background("tokio-runtime-w"));
        assert!(!is_background("sqlx-sqlite-wor"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_background_thread_is_lowered_and_others_are_not() {
        let checked = std::sync::Arc::new(std::sync::Barrier::new(3));
        let (report, reports) = std::sync::mpsc::channel();
        let threads: Vec<_> = ["sqlite-reader-7", "request-thread"]
            .into_iter()
            .map(|name| {
                let (report, checked) = (report.clone(), std::sync::Arc::clone(&checked));
                std::thread::Builder::new()
                    .name(name.to_string())
                    .spawn(move || {
                        report
                            .send((name, rustix::thread::gettid()))
                            .expect("report the thread id");
                        checked.wait();
                    })
                    .expect("spawn")
            })
            .collect();
        let ids: Vec<_> = reports.iter().take(2).collect();
        // The test may itself run under `nice`: the distance is what counts.
        let own = rustix::process::getpriority_process(Some(rustix::process::getpid()))
            .expect("own priority");
        let target = background_nice();
        assert_eq!(target, (own + BACKGROUND_OFFSET).min(19));
        let changed = lower_background_threads();
        if own < 19 {
            assert!(changed >= 1);
        }
        for (name, tid) in ids {
            let nice = rustix::process::getpriority_process(Some(tid)).expect("priority");
            if name == "request-thread" {
                assert_eq!(nice, own, "{name}");
            } else {
                assert_eq!(nice, target, "{name}");
            }
        }
        checked.wait();
        for thread in threads {
            thread.join().expect("join");
        }
    }
}
