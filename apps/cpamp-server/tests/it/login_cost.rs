//! The cost of admin-key checks under attack: failures are counted before the hash
//! runs, wrong keys are never remembered, a storm from one address runs at most five
//! checks and leaves memory where it was, and behind a trusted reverse proxy the
//! failure limit counts each forwarded client.

use std::net::IpAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::{ADMIN_KEY, ServerProcess, eventually};

const METRICS_TOKEN: &str = "scrape-only-token-0123456789";
const GAPS: &str = "/v0/management/collector-gaps?startMs=0&endMs=1&limit=1";

/// The server with the test admin key, the scrape token and `extra` settings.
fn start(extra: &[(&str, &str)]) -> (tempfile::TempDir, ServerProcess) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut env = vec![
        ("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY),
        ("METRICS_TOKEN", METRICS_TOKEN),
    ];
    env.extend_from_slice(extra);
    let server = ServerProcess::start(data.path(), &env);
    (data, server)
}

fn client_from(address: [u8; 4]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(IpAddr::from(address))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn status_with(
    client: &reqwest::blocking::Client,
    server: &ServerProcess,
    key: &str,
    forwarded_for: Option<&str>,
) -> u16 {
    let mut request = client.get(server.url(GAPS)).bearer_auth(key);
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("X-Forwarded-For", forwarded_for);
    }
    request.send().expect("request").status().as_u16()
}

/// `cpamp_admin_key_checks_total`, read with the scrape token (which runs no check).
fn checks_run(server: &ServerProcess) -> u64 {
    crate::support::metric(server, METRICS_TOKEN, "cpamp_admin_key_checks_total")
}

/// Resident memory of a process in bytes, from `/proc`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmRSS")
}

#[test]
fn a_wrong_key_is_refused_every_time_also_after_the_right_key_logged_in() {
    let (_data, server) = start(&[]);
    let client = client_from([127, 0, 0, 11]);
    let wrong = "cmp_admin_WrongKey0123456789abcdefABCDEF01";
    let before = checks_run(&server);
    assert_eq!(status_with(&client, &server, wrong, None), 401);
    assert_eq!(status_with(&client, &server, wrong, None), 401);
    assert_eq!(status_with(&client, &server, ADMIN_KEY, None), 200);
    assert_eq!(status_with(&client, &server, wrong, None), 401);
    assert_eq!(status_with(&client, &server, wrong, None), 401);
    // Every wrong attempt ran its own check; the right key ran one.
    assert_eq!(checks_run(&server) - before, 5);
    // The right key is remembered: using it again runs no check.
    assert_eq!(status_with(&client, &server, ADMIN_KEY, None), 200);
    assert_eq!(status_with(&client, &server, ADMIN_KEY, None), 200);
    assert_eq!(checks_run(&server) - before, 5);
    assert!(server.terminate().success());
}

#[test]
fn two_hundred_concurrent_wrong_keys_from_one_address_run_at_most_five_checks() {
    let (_data, server) = start(&[]);
    let pid = server.child.id();
    let before = checks_run(&server);
    let idle_rss = rss_bytes(pid);
    let attacker = client_from([127, 0, 0, 12]);
    let url = server.url(GAPS);
    let start = Arc::new(Barrier::new(201));
    let threads: Vec<_> = (0..200)
        .map(|index| {
            let attacker = attacker.clone();
            let url = url.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                attacker
                    .get(&url)
                    .bearer_auth(format!("cmp_admin_guess{index:032}"))
                    .send()
                    .map(|response| response.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    start.wait();
    let mut peak_rss = idle_rss;
    let mut statuses = Vec::new();
    for thread in threads {
        while !thread.is_finished() {
            peak_rss = peak_rss.max(rss_bytes(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        statuses.push(thread.join().expect("thread"));
    }
    let refused = statuses.iter().filter(|status| **status == 401).count();
    let limited = statuses.iter().filter(|status| **status == 429).count();
    assert!(refused <= 5, "{refused} answered 401: {statuses:?}");
    assert_eq!(refused + limited, 200, "{statuses:?}");
    let checks = checks_run(&server) - before;
    assert!(checks <= 5, "{checks} argon2 checks ran");
    let growth = peak_rss.saturating_sub(idle_rss);
    assert!(
        growth < 50 * 1024 * 1024,
        "RSS grew by {} MiB (idle {} MiB)",
        growth / 1024 / 1024,
        idle_rss / 1024 / 1024
    );
    // The memory of the checks goes back: RSS returns to within 20 MiB of idle.
    assert!(
        eventually(Duration::from_secs(5), || rss_bytes(pid)
            < idle_rss + 20 * 1024 * 1024),
        "RSS stayed at {} MiB after the storm (idle {} MiB)",
        rss_bytes(pid) / 1024 / 1024,
        idle_rss / 1024 / 1024
    );
    // The attacker is locked out, even with the right key; others are not.
    assert_eq!(status_with(&attacker, &server, ADMIN_KEY, None), 429);
    let other = client_from([127, 0, 0, 13]);
    assert_eq!(status_with(&other, &server, ADMIN_KEY, None), 200);
    assert!(server.terminate().success());
}

#[test]
fn behind_a_trusted_proxy_the_failure_limit_counts_each_forwarded_client() {
    let (_data, server) = start(&[("CPA_MANAGER_TRUSTED_PROXIES", "127.0.0.21, 10.0.0.0/8")]);
    let proxy = client_from([127, 0, 0, 21]);
    let attacker = "203.0.113.5";
    for attempt in 1..=5 {
        let key = format!("cmp_admin_guess-{attempt}");
        // The client as nginx appends it, after whatever the client claimed.
        let chain = format!("198.51.100.1, {attacker}");
        assert_eq!(status_with(&proxy, &server, &key, Some(&chain)), 401);
    }
    assert_eq!(
        status_with(&proxy, &server, "cmp_admin_guess-6", Some(attacker)),
        429
    );
    // A second hop through a trusted internal proxy still names the same client.
    let through_two = format!("{attacker}, 10.1.2.3");
    assert_eq!(
        status_with(&proxy, &server, ADMIN_KEY, Some(&through_two)),
        429
    );
    // Everyone else behind the same proxy logs in.
    assert_eq!(
        status_with(&proxy, &server, ADMIN_KEY, Some("203.0.113.6")),
        200
    );

    // An untrusted peer's X-Forwarded-For is ignored: changing it does not escape.
    let direct = client_from([127, 0, 0, 22]);
    for attempt in 1..=5 {
        let claimed = format!("192.0.2.{attempt}");
        let key = format!("cmp_admin_other-{attempt}");
        assert_eq!(status_with(&direct, &server, &key, Some(&claimed)), 401);
    }
    assert_eq!(
        status_with(&direct, &server, ADMIN_KEY, Some("192.0.2.99")),
        429
    );
    assert!(server.terminate().success());
}

#[test]
fn an_invalid_trusted_proxy_entry_stops_the_start_naming_the_variable() {
    let data = tempfile::tempdir().expect("tempdir");
    let output = crate::support::command(
        data.path(),
        &[("CPA_MANAGER_TRUSTED_PROXIES", "127.0.0.1, nginx")],
    )
    .output()
    .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CPA_MANAGER_TRUSTED_PROXIES") && stderr.contains("\"nginx\""),
        "{stderr}"
    );
}
