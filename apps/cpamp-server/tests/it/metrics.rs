//! `/metrics` in Prometheus text format 0.0.4, read back with a strict parser; CORS.

use std::collections::{BTreeMap, HashMap};

use cpamp_testkit::FakeCpaOptions;

use crate::status::{runtime, start_cpa, start_server, wait_status};
use crate::support::client;

const ADMIN: &str = "cmp_admin_status0123456789abcdefghijklmn";
const CPA_KEY: &str = "cpa-management-key-for-status-tests";

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of text format 0.0.4: every sample belongs to a family declared by
/// `# HELP` and `# TYPE` lines before it, names and label names are valid, label values
/// use only the three escapes, values are floats, families are not split.
fn parse(text: &str) -> Result<(HashMap<String, String>, Vec<Sample>), String> {
    let mut types = HashMap::new();
    let mut helped = HashMap::new();
    let mut samples = Vec::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let valid_name = |name: &str| {
        !name.is_empty()
            && name.chars().enumerate().all(|(index, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (index > 0 && c.is_ascii_digit())
            })
    };
    if !text.ends_with('\n') {
        return Err("exposition must end with a newline".into());
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').ok_or("HELP without text")?;
            if !valid_name(name) || helped.insert(name.to_string(), ()).is_some() {
                return Err(format!("bad or repeated HELP for {name}"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or("TYPE without kind")?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("unknown type {kind}"));
            }
            if types.insert(name.to_string(), kind.to_string()).is_some() {
                return Err(format!("repeated TYPE for {name}"));
            }
            if let Some(previous) = current.replace(name.to_string()) {
                finished.push(previous);
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(format!("unexpected line {line:?}"));
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(index) => line.split_at(index),
            None => return Err(format!("sample without value: {line}")),
        };
        if !valid_name(name) {
            return Err(format!("invalid metric name {name}"));
        }
        if current.as_deref() != Some(name) || finished.iter().any(|done| done == name) {
            return Err(format!("sample {name} outside its family"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                let start = chars
                    .peek()
                    .map(|(index, _)| *index)
                    .ok_or("unterminated labels")?;
                if body[start..].starts_with('}') {
                    end = Some(start + 1);
                    break;
                }
                let eq = body[start..].find('=').ok_or("label without =")? + start;
                let label = &body[start..eq];
                if !valid_name(label) || label.contains(':') {
                    return Err(format!("invalid label name {label}"));
                }
                if !body[eq + 1..].starts_with('"') {
                    return Err("label value not quoted".into());
                }
                while let Some((index, _)) = chars.peek() {
                    if *index > eq + 1 {
                        break;
                    }
                    chars.next();
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => return Err(format!("bad escape {other:?}")),
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\n' => return Err("raw newline in label".into()),
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err("unterminated label value".into());
                }
                if labels.insert(label.to_string(), value).is_some() {
                    return Err(format!("repeated label {label}"));
                }
                match chars.next().map(|(_, c)| c) {
                    Some(',') => {}
                    Some('}') => {
                        end = chars.peek().map(|(index, _)| *index).or(Some(body.len()));
                        break;
                    }
                    other => return Err(format!("unexpected {other:?} after label")),
                }
            }
            rest = &body[end.ok_or("labels")?..];
        }
        let value_text = rest.strip_prefix(' ').ok_or("missing space before value")?;
        let value_text = value_text.split(' ').next().ok_or("value")?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            text => text
                .parse::<f64>()
                .map_err(|_| format!("bad value {text:?}"))?,
        };
        if !helped.contains_key(name) {
            return Err(format!("{name} has no HELP"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok((types, samples))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| sample.value)
}

#[test]
fn the_parser_rejects_malformed_expositions() {
    assert!(parse("# HELP a x\n# TYPE a gauge\na 1\n").is_ok());
    assert!(parse("a 1\n").is_err(), "no family");
    assert!(
        parse("# HELP a x\n# TYPE a gauge\na{b=\"\\q\"} 1\n").is_err(),
        "bad escape"
    );
    assert!(
        parse("# HELP a x\n# TYPE a gauge\na one\n").is_err(),
        "bad value"
    );
    assert!(
        parse("# HELP a x\n# TYPE a gauge\na 1").is_err(),
        "no final newline"
    );
    let (_, samples) =
        parse("# HELP a x\n# TYPE a gauge\na{b=\"q\\\"\\\\\\n\",c=\"\"} 2.5\n").expect("escapes");
    assert_eq!(samples[0].labels["b"], "q\"\\\n");
}

#[test]
fn metrics_parse_as_prometheus_text_and_follow_ingest() {
    let runtime = runtime();
    let cpa = start_cpa(&runtime, FakeCpaOptions::new(CPA_KEY));
    let data = tempfile::tempdir().expect("tempdir");
    let server = start_server(
        data.path(),
        &cpa.base_url(),
        CPA_KEY,
        &[
            ("METRICS_TOKEN", "scrape-token-0123456789"),
            ("USAGE_CORS_ORIGINS", "https://panel.example"),
        ],
    );
    runtime.block_on(cpa.emit(12));
    cpa.push_raw("this is not json");
    wait_status(&server, "12 events", |s| {
        s["eventCount"] == 12 && s["deadLetters"] == 1
    });

    assert_eq!(
        client()
            .get(server.url("/metrics"))
            .send()
            .expect("metrics")
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(server.url("/metrics"))
            .bearer_auth(CPA_KEY)
            .send()
            .expect("metrics")
            .status(),
        401
    );
    // The scrape token opens /metrics only, never the admin API.
    let status = client()
        .get(server.url("/status"))
        .bearer_auth("scrape-token-0123456789")
        .send()
        .expect("status");
    assert_eq!(status.status(), 401);

    for credential in ["scrape-token-0123456789", ADMIN] {
        let response = client()
            .get(server.url("/metrics"))
            .bearer_auth(credential)
            .send()
            .expect("metrics");
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/plain; version=0.0.4")
        );
        let text = response.text().expect("text");
        let (types, samples) = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(types["cpamp_events_ingested_total"], "counter");
        assert_eq!(
            value(&samples, "cpamp_events_ingested_total", &[]),
            Some(12.0)
        );
        assert_eq!(value(&samples, "cpamp_events_stored", &[]), Some(12.0));
        assert_eq!(
            value(&samples, "cpamp_events_dead_lettered_total", &[]),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "cpamp_events_skipped_total", &[]),
            Some(0.0)
        );
        assert_eq!(
            value(&samples, "cpamp_collector_state", &[("state", "running")]),
            Some(1.0)
        );
        assert_eq!(
            value(&samples, "cpamp_collector_state", &[("state", "error")]),
            Some(0.0)
        );
        assert!(
            value(
                &samples,
                "cpamp_collector_last_consumed_timestamp_seconds",
                &[]
            )
            .expect("consumed")
                > 1.7e9
        );
        assert!(
            value(
                &samples,
                "cpamp_collector_last_inserted_timestamp_seconds",
                &[]
            )
            .expect("inserted")
                > 1.7e9
        );
        assert_eq!(
            value(&samples, "cpamp_collector_insert_lag_seconds", &[]),
            Some(0.0)
        );
        assert!(value(&samples, "cpamp_sqlite_bytes", &[("file", "database")]).expect("db") > 0.0);
        assert!(value(&samples, "cpamp_sqlite_bytes", &[("file", "wal")]).is_some());
        assert!(
            value(
                &samples,
                "cpamp_http_requests_total",
                &[("route", "/status"), ("method", "GET"), ("status", "200")]
            )
            .expect("status requests")
                >= 1.0
        );
        assert!(
            value(
                &samples,
                "cpamp_http_requests_total",
                &[("route", "/metrics"), ("status", "401")]
            )
            .expect("401s")
                >= 2.0
        );
    }

    // CORS: OPTIONS anywhere is 204 without auth; an allowed origin is echoed with Vary.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, server.url("/status"))
        .header("Origin", "https://panel.example")
        .send()
        .expect("options");
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://panel.example"
    );
    assert_eq!(
        preflight.headers()["access-control-allow-methods"],
        "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    );
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "Authorization, Content-Type"
    );
    assert_eq!(preflight.headers()["vary"], "Origin");
    let other = client()
        .get(server.url("/health"))
        .header("Origin", "https://evil.example")
        .send()
        .expect("health");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert!(
        other
            .headers()
            .get("access-control-allow-methods")
            .is_some()
    );
    let panel = client()
        .get(server.url("/management.html"))
        .header("Origin", "https://panel.example")
        .send()
        .expect("panel");
    assert!(
        panel
            .headers()
            .get("access-control-allow-methods")
            .is_none()
    );
}
