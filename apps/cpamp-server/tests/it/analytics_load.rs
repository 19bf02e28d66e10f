//! Analytics under load: identical concurrent requests share one computation, and
//! `/status` keeps answering while analytics are busy.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::{ADMIN_KEY, ServerProcess, client};

const METRICS_TOKEN: &str = "scrape-only-token-analytics-load";

fn counter(server: &ServerProcess, name: &str) -> u64 {
    crate::support::metric(server, METRICS_TOKEN, name)
}

#[test]
fn identical_concurrent_dashboard_requests_share_one_computation() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        data.path(),
        &[
            ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY),
            ("METRICS_TOKEN", METRICS_TOKEN),
        ],
    );
    let url = server.url(
        "/v0/management/dashboard/summary?today_start_ms=1735689600000&now_ms=1735696800000&top_models=5&recent_failures=5",
    );
    // Log in once so the key is remembered and the burst runs no key checks.
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("warm")
            .status(),
        200
    );
    let computed_before = counter(&server, "cpamp_analytics_computations_total");
    let start = Arc::new(Barrier::new(41));
    let threads: Vec<_> = (0..40)
        .map(|_| {
            let (url, start) = (url.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                let http = client();
                start.wait();
                let response = http
                    .get(&url)
                    .bearer_auth(ADMIN_KEY)
                    .send()
                    .expect("dashboard");
                (response.status().as_u16(), response.text().expect("body"))
            })
        })
        .collect();
    start.wait();
    let answers: Vec<(u16, String)> = threads
        .into_iter()
        .map(|thread| thread.join().expect("thread"))
        .collect();
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    assert!(answers.iter().all(|(_, body)| *body == answers[0].1));
    let computed = counter(&server, "cpamp_analytics_computations_total") - computed_before;
    let shared = counter(&server, "cpamp_analytics_shared_answers_total");
    // Everything within the freshness window shares: at most a few computations
    // (one per second of the burst), never one per request.
    assert!(
        computed <= 5,
        "{computed} computations for 40 identical requests"
    );
    assert!(shared >= 35, "only {shared} shared answers");
    // A different request computes on its own.
    let other = client()
        .get(server.url(
            "/v0/management/dashboard/summary?today_start_ms=1735603200000&now_ms=1735610400000",
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("other");
    assert_eq!(other.status(), 200);
    assert_eq!(
        counter(&server, "cpamp_analytics_computations_total") - computed_before,
        computed + 1
    );
    // `/status` answers while the gate is idle or busy alike.
    let status = client()
        .get(server.url("/status"))
        .bearer_auth(ADMIN_KEY)
        .timeout(Duration::from_secs(5))
        .send()
        .expect("status");
    assert_eq!(status.status(), 200);
}
