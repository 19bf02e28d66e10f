//! A store that cannot be used right now is a `503 database_unavailable` with
//! `Retry-After`, never a bare 500, on routes other than analytics too.

use crate::support::{ADMIN_KEY, ServerProcess, client, json_of};

#[test]
fn a_write_to_read_only_database_files_is_503_with_retry_after_and_works_again_after() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    let http = client();
    let put = |alias: &str| {
        http.put(server.url("/v0/management/api-key-aliases"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({
                "items": [{"apiKeyHash": "ab".repeat(32), "alias": alias}],
            }))
            .send()
            .expect("put aliases")
    };
    assert_eq!(put("first").status(), 200);

    let files = ["usage.sqlite", "usage.sqlite-wal", "usage.sqlite-shm"]
        .map(|name| data.path().join(name))
        .to_vec();
    let read_only = cpamp_testkit::ReadOnlyFiles::set(files);
    let refused = put("second");
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let (status, body) = json_of(refused);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "database_unavailable", "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    // The cause is logged, not answered.
    assert!(
        !body["error"].as_str().unwrap_or("").contains("sqlite"),
        "{body}"
    );
    drop(read_only);

    let (status, body) = json_of(put("third"));
    assert_eq!(status, 200, "{body}");
    let (status, listed) = json_of(
        http.get(server.url("/v0/management/api-key-aliases"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("list"),
    );
    assert_eq!(status, 200);
    assert!(listed.to_string().contains("third"), "{listed}");
}
