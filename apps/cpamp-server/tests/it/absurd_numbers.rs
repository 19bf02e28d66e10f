//! Absurd numbers from CPA become dead letters naming the field, and every read keeps
//! answering: an `i64::MAX` token count must not poison a sum.

use cpamp_testkit::FakeCpaOptions;

use crate::status::{runtime, start_cpa, start_server, wait_status};
use crate::support::client;

const ADMIN: &str = "cmp_admin_status0123456789abcdefghijklmn";
const CPA_KEY: &str = "cpa-management-key-for-absurd-numbers";

fn payload(timestamp_ms: i64, tokens: &str) -> String {
    format!(
        r#"{{"timestamp":{timestamp_ms},"model":"gpt-5","provider":"codex","tokens":{tokens},"latency_ms":900,"failed":false}}"#
    )
}

/// The reasons of the stored dead letters, read from the database file.
fn dead_letter_reasons(data_dir: &std::path::Path) -> Vec<String> {
    crate::support::read_database(data_dir, async |connection| {
        sqlx::query_scalar::<_, String>("SELECT error FROM dead_letter_events ORDER BY id")
            .fetch_all(connection)
            .await
            .expect("dead letters")
    })
    .expect("open database")
}

#[test]
fn an_i64_max_token_count_is_a_dead_letter_and_the_dashboard_still_answers() {
    let runtime = runtime();
    let cpa = start_cpa(&runtime, FakeCpaOptions::new(CPA_KEY));
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(data.path(), &cpa.base_url(), CPA_KEY, &[]);
    let now = crate::support::now_ms();
    let max = i64::MAX;
    cpa.push_raw(payload(now - 1000, &format!(r#"{{"input_tokens":{max}}}"#)));
    cpa.push_raw(payload(
        now - 900,
        r#"{"input_tokens":5000000000000000000}"#,
    ));
    cpa.push_raw(payload(
        now - 800,
        r#"{"input_tokens":5000000000000000000}"#,
    ));
    cpa.push_raw(payload(
        now - 700,
        r#"{"input_tokens":10,"output_tokens":20,"total_tokens":30}"#,
    ));
    cpa.push_raw(
        r#"{"timestamp":1,"model":"gpt-5","tokens":{"input_tokens":1},"latency_ms":99999999999999}"#,
    );
    wait_status(&server, "1 event and 4 dead letters", |s| {
        s["eventCount"] == 1 && s["deadLetters"] == 4
    });
    let reasons = dead_letter_reasons(data.path());
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons[0].starts_with("tokens.input_tokens is 9223372036854775807, beyond 1000000000000"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("5000000000000000000"), "{reasons:?}");
    assert!(
        reasons[3].starts_with("latency_ms is 99999999999999"),
        "{reasons:?}"
    );

    let day_start = now - now.rem_euclid(86_400_000);
    let response = client()
        .get(server.url(&format!(
            "/v0/management/dashboard/summary?today_start_ms={day_start}&now_ms={now}"
        )))
        .bearer_auth(ADMIN)
        .send()
        .expect("dashboard");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().expect("json");
    let text = body.to_string();
    assert!(!text.contains("9223372036854775807"), "{text}");
    assert!(!text.contains("-9.2"), "{text}");
    let response = client()
        .post(server.url("/v0/management/monitoring/analytics"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({
            "from_ms": now - 3_600_000,
            "to_ms": now + 60_000,
            "include": {"summary": true, "timeline": true, "models": true},
        }))
        .send()
        .expect("monitoring");
    let status = response.status();
    let summary = response.text().expect("body");
    assert_eq!(status, 200, "{summary}");
    assert!(!summary.contains("9223372036854775807"), "{summary}");
    assert!(!summary.contains(":-9"), "{summary}");
}
