//! `cargo xtask fuzz [--smoke] [target] [--runs N] [--seeds]`: the libFuzzer targets in
//! `fuzz/` (see `docs/fuzzing.md`).
//!
//! - `--smoke` (what `ci` runs): replays the seed corpus (`fuzz/seeds/`) and every saved
//!   regression input (`fuzz/regressions/`) through the same target functions on the
//!   stable toolchain (`crates/api/tests/fuzz_corpus.rs`). A cold libFuzzer build (nightly,
//!   instrumented, release) of the four targets took 26 minutes on the shared CI machine,
//!   so CI does not build them; `--smoke --runs N` adds short libFuzzer runs.
//! - without `--smoke`: runs libFuzzer on one target or all of them, one after another,
//!   for `--runs` executions each (default 10,000,000), installing `cargo-fuzz` first if
//!   it is missing; prints the executions, the time and the corpus size per target.
//! - `--seeds`: writes `fuzz/seeds/` again from the fixtures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use xshell::{Shell, cmd};

/// The targets, in the order they run.
pub const TARGETS: &[&str] = &["decode", "resp", "import", "analytics"];

const FULL_RUNS: u64 = 10_000_000;
/// Largest input libFuzzer generates per target: a few payloads or frames. Longer seeds
/// are cut to it (the replay test reads them whole); larger inputs mostly repeat what
/// smaller ones cover and slow every execution down.
fn max_len(target: &str) -> u32 {
    match target {
        "decode" => 8 * 1024,
        "analytics" => 2 * 1024,
        _ => 4 * 1024,
    }
}

pub fn run(shell: &Shell, args: &[String]) -> Result<(), String> {
    let mut smoke = false;
    let mut seeds = false;
    let mut runs = None;
    let mut only = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--smoke" => smoke = true,
            "--seeds" => seeds = true,
            "--runs" => {
                let value = rest.next().ok_or("--runs needs a number")?;
                runs = Some(
                    value
                        .replace('_', "")
                        .parse::<u64>()
                        .map_err(|_| format!("--runs {value:?} is not a number"))?,
                );
            }
            target if TARGETS.contains(&target) => only = Some(target.to_string()),
            other => {
                return Err(format!(
                    "unknown fuzz argument {other:?}; targets: {}",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    let root = crate::project_root();
    if seeds {
        write_seeds(&root)?;
        if !smoke && runs.is_none() && only.is_none() {
            return Ok(());
        }
    }
    let targets: Vec<&str> = match &only {
        Some(target) => vec![target.as_str()],
        None => TARGETS.to_vec(),
    };
    if smoke {
        crate::step("fuzz --smoke: seed corpus and regressions through the targets (stable)");
        cmd!(shell, "cargo test --locked -p cpamp-api --test fuzz_corpus")
            .run()
            .map_err(|error| error.to_string())?;
        if runs.is_none() {
            return Ok(());
        }
    }
    if !has_nightly(shell) {
        return Err(
            "libFuzzer needs a nightly toolchain: rustup toolchain install nightly".to_string(),
        );
    }
    ensure_cargo_fuzz(shell)?;
    let runs = runs.unwrap_or(FULL_RUNS);
    let mut rows = Vec::new();
    for target in targets {
        rows.push(fuzz_one(shell, &root, target, runs)?);
    }
    println!(
        "\n{:<10} {:>12} {:>9} {:>8}",
        "target", "executions", "seconds", "corpus"
    );
    for row in rows {
        println!(
            "{:<10} {:>12} {:>9.0} {:>8}",
            row.target, row.executions, row.seconds, row.corpus
        );
    }
    Ok(())
}

struct Row {
    target: String,
    executions: u64,
    seconds: f64,
    corpus: usize,
}

fn has_nightly(shell: &Shell) -> bool {
    cmd!(shell, "cargo +nightly --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// Installs `cargo-fuzz` from crates.io when `cargo fuzz` is missing.
fn ensure_cargo_fuzz(shell: &Shell) -> Result<(), String> {
    let present = cmd!(shell, "cargo fuzz --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if present {
        return Ok(());
    }
    crate::step("installing cargo-fuzz");
    cmd!(shell, "cargo install cargo-fuzz --locked")
        .run()
        .map_err(|error| format!("cargo install cargo-fuzz: {error}"))
}

/// Runs libFuzzer on `target` for `runs` executions over its working corpus
/// (`fuzz/corpus/<target>`, kept between runs), the seeds and the regressions. A crash
/// leaves its input in `fuzz/artifacts/<target>/` and fails the command.
fn fuzz_one(shell: &Shell, root: &Path, target: &str, runs: u64) -> Result<Row, String> {
    crate::step(&format!("fuzz {target}: {runs} executions"));
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|error| error.to_string())?;
    let seeds = root.join("fuzz/seeds").join(target);
    let regressions = root.join("fuzz/regressions").join(target);
    std::fs::create_dir_all(&regressions).map_err(|error| error.to_string())?;
    let runs_flag = format!("-runs={runs}");
    let max_len = format!("-max_len={}", max_len(target));
    let started = Instant::now();
    let output = cmd!(
        shell,
        "cargo +nightly fuzz run --sanitizer none --no-trace-compares {target} {corpus} {seeds} {regressions} -- {runs_flag} {max_len} -timeout=20 -rss_limit_mb=2048 -print_final_stats=1"
    )
    .ignore_status()
    .output()
    .map_err(|error| error.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    let log_path = root.join("target").join(format!("fuzz-{target}.log"));
    let _ = std::fs::create_dir_all(root.join("target"));
    let _ = std::fs::write(&log_path, log.as_bytes());
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "fuzz target {target} failed (full log {}):\n{}",
            log_path.display(),
            tail.join("\n")
        ));
    }
    let executions = log
        .lines()
        .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| format!("no execution count in {}", log_path.display()))?;
    let corpus = std::fs::read_dir(&corpus)
        .map(|entries| entries.count())
        .unwrap_or(0);
    Ok(Row {
        target: target.to_string(),
        executions,
        seconds,
        corpus,
    })
}

/// Writes `fuzz/seeds/<target>/` from the fixtures: what CPA and older servers really
/// send, shaped as each target reads it.
fn write_seeds(root: &Path) -> Result<(), String> {
    crate::step("fuzz --seeds: seed corpus from the fixtures");
    let fixtures = root.join("crates/domain/tests/fixtures");
    let read = |path: PathBuf| {
        std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))
    };
    let events = read(fixtures.join("cpa/usage-events.jsonl"))?;
    let malformed = read(fixtures.join("cpa/malformed.jsonl"))?;
    let go_export = read(fixtures.join("go/usage-export.jsonl"))?;
    let lines = |bytes: &[u8]| -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = bytes
            .split(|byte| *byte == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        if lines.last().is_some_and(Vec::is_empty) {
            lines.pop();
        }
        lines
    };
    let event_lines = lines(&events);
    let malformed_lines = lines(&malformed);

    let mut decode = Vec::new();
    for (index, line) in event_lines.iter().enumerate() {
        decode.push((format!("cpa-{:02}", index + 1), line.clone()));
    }
    for (index, line) in malformed_lines.iter().enumerate() {
        decode.push((format!("malformed-{:02}", index + 1), line.clone()));
    }

    let mut resp = Vec::new();
    let small: Vec<&Vec<u8>> = event_lines
        .iter()
        .filter(|line| line.len() < 2048)
        .collect();
    resp.push((
        "pop-array".to_string(),
        seeded(0, &array(small.iter().take(3).map(|line| bulk(line)))),
    ));
    resp.push(("pop-one".to_string(), seeded(1, &bulk(small[0]))));
    resp.push((
        "pop-empty".to_string(),
        seeded(2, b"*-1\r\n$-1\r\n_\r\n*0\r\n"),
    ));
    resp.push((
        "pop-errors".to_string(),
        seeded(3, b":7\r\n-ERR wrong number of arguments\r\n+OK\r\n"),
    ));
    resp.push((
        "subscribe".to_string(),
        seeded(
            4,
            &[
                array([bulk(b"subscribe"), bulk(b"usage"), b":1\r\n".to_vec()]),
                array([
                    bulk(b"message"),
                    bulk(b"usage"),
                    bulk(br#"{"support_refresh":true}"#),
                ]),
                array([bulk(b"message"), bulk(b"usage"), bulk(small[1])]),
                array([bulk(b"pong"), bulk(b"")]),
                b"+PONG\r\n".to_vec(),
                array([bulk(b"message"), bulk(b"usage"), bulk(b"")]),
                array([bulk(b"unsubscribe"), bulk(b"usage"), b":0\r\n".to_vec()]),
            ]
            .concat(),
        ),
    ));
    resp.push((
        "malformed-items".to_string(),
        seeded(
            5,
            &array(malformed_lines.iter().take(12).map(|line| bulk(line))),
        ),
    ));
    resp.push((
        "http-reply".to_string(),
        seeded(6, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
    ));
    resp.push((
        "nested".to_string(),
        seeded(0, b"*2\r\n*1\r\n:1\r\n$3\r\nabc\r\n"),
    ));

    let mut import = Vec::new();
    let go_lines = lines(&go_export);
    for (index, group) in go_lines.chunks(3).enumerate() {
        import.push((
            format!("go-export-{}", index + 1),
            seeded(index as u8, &group.join(&b'\n')),
        ));
    }
    for (index, group) in small.chunks(4).enumerate() {
        let group: Vec<&[u8]> = group.iter().map(|line| line.as_slice()).collect();
        import.push((
            format!("cpa-records-{}", index + 1),
            seeded(index as u8 + 1, &group.join(&b'\n')),
        ));
    }
    import.push((
        "malformed-lines".to_string(),
        seeded(
            2,
            &malformed_lines
                .iter()
                .take(34)
                .cloned()
                .collect::<Vec<_>>()
                .join(&b'\n'),
        ),
    ));
    let first: Vec<&[u8]> = small.iter().take(4).map(|line| line.as_slice()).collect();
    let json_array = [b"[".to_vec(), first.join(&b","[..]), b"]".to_vec()].concat();
    import.push(("array".to_string(), seeded(3, &json_array)));
    let details = first.join(&b","[..]);
    let apis = [
        br#"{"POST /v1/responses":{"models":{"gpt-5":{"details":["#.to_vec(),
        details,
        br#"]},"o3":{"details":[]}}},"GET /v1/models":{"total_requests":3}}"#.to_vec(),
    ]
    .concat();
    let legacy_export = [
        br#"{"usage":{"total_requests":4,"apis":"#.to_vec(),
        apis.clone(),
        b"}}\n".to_vec(),
    ]
    .concat();
    import.push(("legacy-export".to_string(), seeded(4, &legacy_export)));
    let legacy_payload = [
        br#"{"apis":"#.to_vec(),
        apis,
        br#","total_requests":4}"#.to_vec(),
    ]
    .concat();
    import.push(("legacy-payload".to_string(), seeded(5, &legacy_payload)));
    let go_lines = lines(&go_export);
    import.push((
        "exported-array".to_string(),
        seeded(
            6,
            &[b"[".to_vec(), go_lines.join(&b','), b"]".to_vec()].concat(),
        ),
    ));

    let mut analytics = Vec::new();
    for (name, query) in [
        (
            "dashboard",
            "today_start_ms=1780185600000&now_ms=1780272000000&top_models=5&recent_failures=10",
        ),
        ("dashboard-minimal", "today_start_ms=1780185600000"),
        (
            "dashboard-encoded",
            "today_start_ms=%201780185600000%20&now_ms=&top_models=-1&x=%E2%9C%93",
        ),
    ] {
        analytics.push((name.to_string(), seeded(0, query.as_bytes())));
    }
    for (name, body) in [
        (
            "monitoring-overview",
            r#"{"from_ms":1780185600000,"to_ms":1780272000000,"now_ms":1780271000000,"time_zone":"Asia/Kathmandu","filters":{"models":["gpt-5(high)"],"providers":["Codex"],"include_failed":true,"cache_status":"hit"},"include":{"summary":true,"summary_profile":"compact","granularity":"hour","summary_percentiles":true,"summary_comparison":true,"timeline":true,"model_stats":true,"channel_share":true,"api_key_stats":true,"anomaly_points":true}}"#,
        ),
        (
            "monitoring-dashboard",
            r#"{"from_ms":1780185600000,"to_ms":1780272000001,"now_ms":1780272000000,"time_zone":"Europe/Berlin","include":{"api_key_stats":true}}"#,
        ),
        (
            "monitoring-events",
            r#"{"from_ms":1779667200000,"to_ms":1780272000000,"time_zone":"America/New_York","search_query":" Claude ","filters":{"failed_only":true,"min_latency_ms":500,"header_error_kinds":["rate_limit"]},"include":{"events_page":{"limit":100,"before_ms":1780000000000,"before_id":42},"drilldown_preview":{"from_ms":1779667200000,"to_ms":1779753600000,"limit":12},"recent_failures":20,"filter_options":true,"filter_selectors":true,"task_buckets":true,"heatmap":true,"hourly_distribution":true}}"#,
        ),
        ("monitoring-trailing", r#"{"from_ms":1,"to_ms":2} trailing"#),
    ] {
        analytics.push((name.to_string(), seeded(1, body.as_bytes())));
    }

    for (target, seeds) in [
        ("decode", decode),
        ("resp", resp),
        ("import", import),
        ("analytics", analytics),
    ] {
        let dir = root.join("fuzz/seeds").join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).map_err(|error| error.to_string())?;
        }
        eprintln!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}

/// A target input: the selector byte the target reads first, then `bytes`.
fn seeded(selector: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(bytes);
    out
}

fn bulk(bytes: &[u8]) -> Vec<u8> {
    [
        format!("${}\r\n", bytes.len()).into_bytes(),
        bytes.to_vec(),
        b"\r\n".to_vec(),
    ]
    .concat()
}

fn array(elements: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let elements: Vec<Vec<u8>> = elements.into_iter().collect();
    [
        format!("*{}\r\n", elements.len()).into_bytes(),
        elements.concat(),
    ]
    .concat()
}
