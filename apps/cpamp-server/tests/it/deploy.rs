//! The deployment files, checked without a container runtime: the Dockerfile's stages,
//! user, environment, port, volume, health check and entry point; both compose variants;
//! the reverse-proxy examples against the compose names; and the image's entry point
//! script run for real (as root it must hand an earlier image's root-owned files to the
//! service user). `cargo xtask deploy-check` adds hadolint, shellcheck and
//! `systemd-analyze`.

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::{ServerProcess, binary};

/// The environment of the earlier image: existing volumes and compose files rely on it.
const EARLIER_IMAGE_ENV: &[(&str, &str)] = &[
    ("HTTP_ADDR", "0.0.0.0:18317"),
    ("USAGE_DATA_DIR", "/data"),
    ("USAGE_DB_PATH", "/data/usage.sqlite"),
];
/// The earlier image's entry point, volume and compose service names.
const ENTRYPOINT: &str = r#"["cpa-manager-plus"]"#;
const SERVICE: &str = "cpa-manager-plus";
const VOLUME: &str = "cpa-manager-plus-data";
const CPA_SERVICE: &str = "cli-proxy-api";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_root().join(relative))
        .unwrap_or_else(|error| panic!("read {relative}: {error}"))
}

/// One Dockerfile instruction: keyword (upper case) and its arguments, with line
/// continuations joined and comment lines inside them dropped, as Docker reads them.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut result = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        result.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        current.clear();
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continuation");
    result
}

/// Stages by name (`FROM … AS name`), in order.
fn stages(instructions: &[Instruction]) -> Vec<(String, String, Vec<Instruction>)> {
    let mut stages: Vec<(String, String, Vec<Instruction>)> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split(' ').collect();
            let base = words
                .iter()
                .find(|word| !word.starts_with("--"))
                .expect("FROM names an image")
                .to_string();
            let name = match words
                .iter()
                .position(|word| word.eq_ignore_ascii_case("as"))
            {
                Some(index) => words[index + 1].to_string(),
                None => panic!("stage FROM {base} has no name; name every stage"),
            };
            stages.push((name, base, Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(instruction.clone());
        }
    }
    stages
}

fn find<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|instruction| instruction.keyword == keyword)
        .map(|instruction| instruction.args.as_str())
        .collect()
}

#[test]
fn dockerfile_builds_in_cached_stages_and_runs_like_the_earlier_image() {
    let text = read("deploy/Dockerfile");
    let all = instructions(&text);
    let stages = stages(&all);
    let names: Vec<&str> = stages.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["chef", "planner", "build", "runtime"], "stages");

    // Dependencies are cooked from the recipe before the sources are copied, so a source
    // change does not rebuild them.
    let build = &stages[2].2;
    let cook = build
        .iter()
        .position(|step| {
            step.keyword == "RUN" && step.args.contains("cargo chef cook --release --locked")
        })
        .expect("build stage cooks the dependencies");
    let sources = build
        .iter()
        .position(|step| step.keyword == "COPY" && step.args == ". .")
        .expect("build stage copies the sources");
    let compile = build
        .iter()
        .position(|step| {
            step.keyword == "RUN"
                && step
                    .args
                    .contains("cargo build --release --locked --package cpamp-server")
        })
        .expect("build stage compiles cpamp-server");
    assert!(
        cook < sources && sources < compile,
        "cook, copy, build: in that order"
    );
    assert!(
        find(build, "COPY")
            .iter()
            .any(|args| args.contains("--from=planner") && args.contains("recipe.json")),
        "only the recipe comes from the planner"
    );

    let (_, base, runtime) = &stages[3];
    assert!(
        base.starts_with("debian:") && base.ends_with("-slim"),
        "runtime image is Debian slim, got {base}"
    );
    let env = find(runtime, "ENV").join(" ");
    for (name, value) in EARLIER_IMAGE_ENV {
        assert!(
            env.split(' ').any(|pair| pair == format!("{name}={value}")),
            "runtime ENV lacks {name}={value}: {env}"
        );
    }
    assert_eq!(find(runtime, "EXPOSE"), ["18317"]);
    assert_eq!(find(runtime, "VOLUME"), [r#"["/data"]"#]);
    assert_eq!(find(runtime, "ENTRYPOINT"), [ENTRYPOINT]);
    let health = find(runtime, "HEALTHCHECK");
    assert_eq!(health.len(), 1, "one HEALTHCHECK");
    assert!(
        health[0].contains("CMD")
            && health[0].contains("/health")
            && health[0].contains("HTTP_ADDR"),
        "health check asks /health on the port of HTTP_ADDR: {}",
        health[0]
    );
    assert!(
        find(runtime, "COPY")
            .iter()
            .any(|args| args.contains("--from=build")
                && args.ends_with("/usr/local/bin/cpamp-server")),
        "runtime copies the binary from the build stage"
    );
    assert!(
        find(runtime, "COPY")
            .iter()
            .any(|args| args
                .ends_with("deploy/docker-entrypoint.sh /usr/local/bin/cpa-manager-plus")),
        "the entry point script is installed as cpa-manager-plus"
    );

    // The service runs as a dedicated user, never root: the image creates it with a fixed
    // non-zero uid, and the entry point drops to it before starting the server.
    let runs = find(runtime, "RUN").join(" ");
    let uid = runs
        .split("--uid ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("useradd --uid");
    assert_ne!(uid, "0");
    assert!(
        runs.contains("useradd --system") && runs.contains(" cpamp"),
        "creates the cpamp user"
    );
    assert!(
        runs.contains("chown cpamp:cpamp /data"),
        "/data belongs to cpamp in a fresh volume"
    );
    for user in find(runtime, "USER") {
        assert!(user != "root" && user != "0", "USER {user}");
    }
    let script = read("deploy/docker-entrypoint.sh");
    assert!(script.contains(r#"user="${CPAMP_USER:-cpamp}""#));
    assert!(script.contains(
        r#"exec setpriv --reuid="$user" --regid="$group" --init-groups -- cpamp-server "$@""#
    ));

    // The build context leaves out build output and local data.
    let ignore = read(".dockerignore");
    for entry in ["target", "data", ".git"] {
        assert!(
            ignore
                .lines()
                .any(|line| line.trim_start_matches('/') == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

fn yaml(relative: &str) -> Yaml {
    let mut documents = YamlLoader::load_from_str(&read(relative))
        .unwrap_or_else(|error| panic!("{relative} is not YAML: {error}"));
    assert_eq!(documents.len(), 1, "{relative}: one document");
    documents.remove(0)
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The services compose starts with these profiles enabled.
fn active_services(compose: &Yaml, profiles: &[&str]) -> Vec<String> {
    let mut active: Vec<String> = compose["services"]
        .as_hash()
        .expect("services")
        .iter()
        .filter(|(_, service)| {
            let wanted = strings(&service["profiles"]);
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|profile| profiles.contains(&profile.as_str()))
        })
        .map(|(name, _)| name.as_str().expect("service name").to_string())
        .collect();
    active.sort();
    active
}

#[test]
fn compose_offers_both_variants_with_the_earlier_names() {
    let compose = yaml("deploy/compose.yaml");
    let text = read("deploy/compose.yaml");

    // Variant 2 (CPA on the Linux host) starts cpamp alone; variant 1 adds CPA.
    assert_eq!(active_services(&compose, &[]), [SERVICE]);
    assert_eq!(
        active_services(&compose, &["with-cpa"]),
        [CPA_SERVICE, SERVICE]
    );
    assert!(
        text.contains("docker compose --profile with-cpa up -d")
            && text.contains("docker compose up -d")
    );
    assert!(
        text.contains("http://cli-proxy-api:8317")
            && text.contains("http://host.docker.internal:8317")
    );

    let cpamp = &compose["services"][SERVICE];
    assert_eq!(
        cpamp["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    let context = cpamp["build"]["context"].as_str().expect("build context");
    assert!(
        repo_root()
            .join("deploy")
            .join(context)
            .join("deploy/Dockerfile")
            .is_file(),
        "build context {context} does not hold deploy/Dockerfile"
    );
    assert_eq!(cpamp["container_name"].as_str(), Some(SERVICE));
    assert_eq!(strings(&cpamp["ports"]), ["18317:18317"]);
    assert_eq!(strings(&cpamp["volumes"]), [format!("{VOLUME}:/data")]);
    assert_eq!(
        strings(&cpamp["extra_hosts"]),
        ["host.docker.internal:host-gateway"]
    );
    let health = strings(&cpamp["healthcheck"]["test"]).join(" ");
    assert!(
        health.contains("http://127.0.0.1:18317/health"),
        "healthcheck: {health}"
    );
    let environment = cpamp["environment"].as_hash().expect("environment map");
    for (name, value) in EARLIER_IMAGE_ENV {
        assert_eq!(
            environment
                .get(&Yaml::String((*name).to_string()))
                .and_then(Yaml::as_str),
            Some(*value),
            "{name}"
        );
    }
    assert_eq!(
        compose["volumes"][VOLUME]["name"].as_str(),
        Some(VOLUME),
        "the volume keeps its plain name"
    );

    let cpa = &compose["services"][CPA_SERVICE];
    assert_eq!(cpa["container_name"].as_str(), Some(CPA_SERVICE));
    assert_eq!(strings(&cpa["ports"]), ["8317:8317"]);
    assert!(
        strings(&cpa["volumes"])
            .iter()
            .any(|volume| volume.ends_with(":/CLIProxyAPI/config.yaml"))
    );
}

/// The paths the FAQ's same-domain rule sends to cpamp; everything else goes to CPA.
const CPAMP_PATHS: &[&str] = &["/management.html", "/usage-service/", "/v0/management/"];

#[test]
fn reverse_proxy_examples_match_the_compose_names_and_stream() {
    let upstream_cpamp = format!("{SERVICE}:18317");
    let upstream_cpa = format!("{CPA_SERVICE}:8317");

    let nginx = read("deploy/reverse-proxy/nginx.conf");
    assert!(
        nginx.contains(&format!("server {upstream_cpamp};")),
        "nginx upstream cpamp"
    );
    assert!(
        nginx.contains(&format!("server {upstream_cpa};")),
        "nginx upstream cpa"
    );
    for path in CPAMP_PATHS {
        assert!(
            nginx.lines().any(|line| line.contains("location")
                && line.contains(path)
                && line.contains("http://cpamp")),
            "nginx does not send {path} to cpamp"
        );
    }
    assert!(
        nginx.contains("location / {\n        proxy_pass http://cpa;"),
        "nginx sends the rest to CPA"
    );
    for streaming in [
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "proxy_http_version 1.1;",
    ] {
        assert!(nginx.contains(streaming), "nginx lacks {streaming}");
    }

    // Every path cpamp documents (not CPA's pass-through ones) reaches cpamp on one
    // domain.
    for operation in cpamp_api::routes::openapi::OPERATIONS {
        let path = operation.path;
        if operation.access == cpamp_api::routes::openapi::Access::CpaApiKey || path == "/" {
            continue;
        }
        let routed = nginx.lines().map(str::trim).any(|line| {
            let exact = line.starts_with(&format!("location = {path} "));
            let prefix = line
                .strip_prefix("location ^~ ")
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|prefix| path.starts_with(prefix));
            (exact || prefix) && line.contains("http://cpamp")
        });
        assert!(routed, "nginx.conf does not send {path} to cpamp");
    }

    let caddy = read("deploy/reverse-proxy/Caddyfile");
    let matcher = caddy
        .lines()
        .find(|line| line.trim_start().starts_with("path "))
        .expect("Caddy path matcher");
    for path in CPAMP_PATHS {
        let pattern = if path.ends_with('/') {
            format!("{path}*")
        } else {
            path.to_string()
        };
        assert!(
            matcher.split_whitespace().any(|word| word == pattern),
            "Caddy does not send {path} to cpamp"
        );
    }
    for operation in cpamp_api::routes::openapi::OPERATIONS {
        let path = operation.path;
        if operation.access == cpamp_api::routes::openapi::Access::CpaApiKey || path == "/" {
            continue;
        }
        let routed = matcher
            .split_whitespace()
            .skip(1)
            .any(|word| match word.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => word == path,
            });
        assert!(routed, "the Caddyfile does not send {path} to cpamp");
    }
    assert!(caddy.contains(&format!("reverse_proxy {upstream_cpamp}")));
    assert!(caddy.contains(&format!("reverse_proxy {upstream_cpa}")));
    assert_eq!(
        caddy.matches("flush_interval -1").count(),
        2,
        "both upstreams stream"
    );
}

fn entrypoint() -> PathBuf {
    repo_root().join("deploy/docker-entrypoint.sh")
}

/// `PATH` with the built binary first, so the script's `cpamp-server` is the real one.
fn path_with_binary() -> String {
    let dir = Path::new(binary()).parent().expect("binary dir");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// As root (as in the image), the script gives the database, its WAL, the lock and
/// data.key written by a root-run server to the service user and runs cpamp-server as
/// that user, who can then write the database. As another user it runs cpamp-server
/// directly.
#[test]
fn entrypoint_hands_root_owned_data_to_the_service_user() {
    use std::os::unix::fs::MetadataExt;

    let data = tempfile::tempdir().expect("tempdir");
    if !is_root() {
        let output = Command::new(entrypoint())
            .arg("--version")
            .env("PATH", path_with_binary())
            .env("USAGE_DATA_DIR", data.path())
            .output()
            .expect("run entrypoint");
        assert!(output.status.success(), "{output:?}");
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("cpamp-server "));
        return;
    }
    // An earlier image's volume: every file written by a server running as root.
    let server = ServerProcess::start(data.path(), &[]);
    assert!(server.terminate().success());
    let owned_by_root = [
        "usage.sqlite",
        "usage.sqlite.manager.lock",
        "usage.sqlite.inbox",
        "data.key",
    ];
    for file in owned_by_root {
        assert_eq!(
            std::fs::metadata(data.path().join(file)).expect(file).uid(),
            0
        );
    }
    let nobody = Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .expect("id nobody");
    let nobody: u32 = String::from_utf8_lossy(&nobody.stdout)
        .trim()
        .parse()
        .expect("uid of nobody");

    let output = Command::new(entrypoint())
        .args(["reset-admin-key", "--admin-key", "cmp_admin_handed_over"])
        .env_clear()
        .env("PATH", path_with_binary())
        .env("CPAMP_USER", "nobody")
        .env("USAGE_DATA_DIR", data.path())
        .output()
        .expect("run entrypoint");
    assert!(
        output.status.success(),
        "reset as the service user failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in owned_by_root {
        assert_eq!(
            std::fs::metadata(data.path().join(file)).expect(file).uid(),
            nobody,
            "{file}"
        );
    }
    assert_eq!(
        std::fs::metadata(data.path()).expect("data dir").uid(),
        nobody
    );

    // The server itself runs as the service user: the script execs it in place.
    let mut server = Command::new(entrypoint())
        .env_clear()
        .env("PATH", path_with_binary())
        .env("CPAMP_USER", "nobody")
        .env("USAGE_DATA_DIR", data.path())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the server through the entry point");
    let stderr = server.stderr.take().expect("stderr");
    let listening = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .any(|line| line.contains("listening on"));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.id())).expect("proc status");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        listening,
        "the server did not start through the entry point"
    );
    let uids = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .expect("Uid line")
        .split_whitespace()
        .map(|uid| uid.parse::<u32>().expect("uid"))
        .collect::<Vec<_>>();
    assert_eq!(
        uids, [nobody; 4],
        "real, effective, saved and filesystem uid"
    );
}
