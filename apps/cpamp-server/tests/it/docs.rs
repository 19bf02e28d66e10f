//! Every shell command in the README, the getting-started guides and the release
//! archive's README is run here against the real binary in a throwaway directory, or is
//! on [`VERIFIED_OTHERWISE`] with the check that covers it (a command that needs Docker,
//! systemd or a release build cannot run in a test). A command that is neither fails the
//! test, and so does a listed command that no longer appears in the docs.
//!
//! Running a command: `sh -c` with the built binary on `PATH` and as `./cpamp-server` and
//! `./cpa-manager-plus` in the working directory; absolute paths in the command are moved
//! under the throwaway root; `HTTP_ADDR` is port 0 and `<host>`-style placeholders are
//! replaced by the address of the server the file's commands started; `curl` gets `-f`
//! so an HTTP error fails. A command that starts the server runs until it listens, then
//! gets SIGTERM and must exit cleanly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{binary, send_sigterm, wait_with_timeout};

/// The documents whose commands must all be verified.
const DOCUMENTS: &[&str] = &[
    "README.md",
    "docs/getting-started.md",
    "docs/zh/getting-started.md",
    "deploy/dist/README.md",
];

/// Commands checked by something other than running them here, with that check.
const VERIFIED_OTHERWISE: &[(&str, &str)] = &[
    ("cargo xtask ci", "is CI itself (.ci/run)"),
    (
        "cargo build --release -p cpamp-server",
        "CI builds the same package (debug profile); the release profile only changes optimisation",
    ),
    (
        "docker build -f deploy/Dockerfile -t cpamp .",
        "no container runtime here: hadolint in `cargo xtask deploy-check` and deploy::dockerfile_* check the stages",
    ),
    (
        "docker run -d --name cpa-manager-plus --restart unless-stopped -p 18317:18317 -v cpa-manager-plus-data:/data cpamp",
        "deploy::dockerfile_* checks the port, volume, environment and entry point; deploy::entrypoint_* runs the entry point",
    ),
    (
        "docker logs cpa-manager-plus 2>&1 | grep \"admin key\"",
        "process::the_generated_admin_key_is_printed_once_and_never_again checks the log line",
    ),
    (
        "docker compose --profile with-cpa up -d",
        "deploy::compose_offers_both_variants_with_the_earlier_names (services per profile)",
    ),
    (
        "docker compose up -d",
        "deploy::compose_offers_both_variants_with_the_earlier_names",
    ),
    (
        "sudo install -m 0755 cpamp-server /usr/local/bin/cpamp-server",
        "`cargo xtask deploy-check` places the binary at the unit's ExecStart path and verifies the unit",
    ),
    (
        "sudo install -m 0644 cpamp-server.service /etc/systemd/system/cpamp-server.service",
        "`cargo xtask deploy-check`: systemd-analyze verify and security on that unit",
    ),
    (
        "sudo systemctl daemon-reload",
        "needs a running systemd; the unit is verified by `cargo xtask deploy-check`",
    ),
    (
        "sudo systemctl enable --now cpamp-server",
        "needs a running systemd; the unit is verified by `cargo xtask deploy-check`",
    ),
    (
        "sudo journalctl -u cpamp-server | grep \"admin key\"",
        "needs a running systemd; the log line is checked by process::the_generated_admin_key_is_printed_once_and_never_again",
    ),
];

/// A command's first word decides how it runs.
fn is_server_binary(word: &str) -> bool {
    matches!(
        word,
        "cpamp-server" | "./cpamp-server" | "./cpa-manager-plus" | "cpa-manager-plus"
    )
}

/// Shell commands in fenced `sh`/`bash`/`shell` blocks: continuation lines joined,
/// comments and blank lines dropped, a trailing `# comment` removed.
fn commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_shell = false;
    let mut in_other = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            if in_shell || in_other {
                in_shell = false;
                in_other = false;
            } else if matches!(info.trim(), "sh" | "bash" | "shell" | "console") {
                in_shell = true;
            } else {
                in_other = true;
            }
            continue;
        }
        if !in_shell || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let line = trimmed.trim_start_matches("$ ");
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let command = match pending.find(" #") {
            Some(at) => pending[..at].trim_end().to_string(),
            None => pending.trim_end().to_string(),
        };
        commands.push(command.split_whitespace().collect::<Vec<_>>().join(" "));
        pending.clear();
    }
    commands
}

/// The words before the program: `NAME=value` assignments.
fn split_env(command: &str) -> (Vec<(String, String)>, Vec<String>) {
    let words = shell_words(command);
    let mut env = Vec::new();
    let mut rest = Vec::new();
    for word in words {
        match word.split_once('=') {
            Some((name, value)) if rest.is_empty() && crate_env_name(name) => {
                env.push((name.to_string(), value.to_string()));
            }
            _ => rest.push(word),
        }
    }
    (env, rest)
}

fn crate_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')
}

/// Whitespace-separated words with single and double quotes removed (enough for the
/// commands in the docs; `sh -c` still runs the command itself).
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in command.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), c) if c == open => quote = None,
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (_, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// One document's commands, run in order in one throwaway root.
struct Runner {
    root: tempfile::TempDir,
    work: PathBuf,
    server: Option<Server>,
    /// The admin key of each data directory, as the commands printed them.
    admin_keys: std::collections::HashMap<PathBuf, String>,
}

struct Server {
    child: Child,
    addr: String,
    data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Runner {
    fn new() -> Runner {
        let root = tempfile::tempdir().expect("tempdir");
        let work = root.path().join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        for name in ["cpamp-server", "cpa-manager-plus"] {
            std::os::unix::fs::symlink(binary(), work.join(name)).expect("symlink");
        }
        Runner {
            root,
            work,
            server: None,
            admin_keys: std::collections::HashMap::new(),
        }
    }

    /// Moves absolute paths under the throwaway root and fills in placeholders.
    fn localise(&self, command: &str) -> String {
        let root = self.root.path().display().to_string();
        let mut out = String::new();
        for (index, piece) in command.split(' ').enumerate() {
            if index > 0 {
                out.push(' ');
            }
            let (head, tail) = match piece.split_once('=') {
                Some((name, value)) if crate_env_name(name) => {
                    (format!("{name}="), value.to_string())
                }
                _ => (String::new(), piece.to_string()),
            };
            if tail.starts_with('/') && !tail.starts_with("//") {
                out.push_str(&format!("{head}{root}{tail}"));
            } else {
                out.push_str(&format!("{head}{tail}"));
            }
        }
        let addr = self
            .server
            .as_ref()
            .map(|server| server.addr.clone())
            .unwrap_or_default();
        let key = self
            .server
            .as_ref()
            .and_then(|server| self.admin_keys.get(&server.data_dir))
            .cloned()
            .unwrap_or_default();
        out.replace("localhost:18317", &addr)
            .replace("127.0.0.1:18317", &addr)
            .replace("<host>:18317", &addr)
            .replace("<CPAMP_ADMIN_KEY>", &key)
    }

    fn shell(&self, command: &str) -> Command {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(command)
            .current_dir(&self.work)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.work.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("HOME", self.root.path())
            // A running server's address, so the doctor finds it; else port 0.
            .env(
                "HTTP_ADDR",
                self.server
                    .as_ref()
                    .map_or("127.0.0.1:0", |server| server.addr.as_str()),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        shell
    }

    fn stop_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            send_sigterm(server.child.id());
            let status = wait_with_timeout(&mut server.child, Duration::from_secs(20));
            assert!(
                status.success(),
                "the server did not stop cleanly: {status:?}\n{}",
                server.log.lock().expect("log").join("\n")
            );
        }
    }

    /// Starts a server command and waits until it listens.
    fn start_server(&mut self, document: &str, command: &str) {
        self.stop_server();
        let localised = self.localise(command);
        // `NAME=value exec program …`: the server replaces the shell and gets SIGTERM.
        let words: Vec<&str> = localised.split(' ').collect();
        let assignments = words
            .iter()
            .take_while(|word| {
                word.split_once('=')
                    .is_some_and(|(name, _)| crate_env_name(name))
            })
            .count();
        let exec = format!(
            "{} exec {}",
            words[..assignments].join(" "),
            words[assignments..].join(" ")
        );
        let mut child = self
            .shell(exec.trim())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = sender.send(
                        addr.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                sink.lock().expect("log").push(line);
            }
        });
        let addr = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{document}: `{command}` did not start a server:\n{}",
                    log.lock().expect("log").join("\n")
                );
            }
        };
        let text = log.lock().expect("log").join("\n");
        let data_dir = self.data_dir_of(command);
        for phrase in ["admin key generated: ", "log in with the CPAMP Admin Key "] {
            if let Some(key) = text
                .split(phrase)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            {
                self.admin_keys.insert(data_dir.clone(), key.to_string());
            }
        }
        self.server = Some(Server {
            child,
            addr,
            data_dir,
            log,
        });
    }

    /// The data directory a server command uses: its `USAGE_DATA_DIR`, else `./data`;
    /// the demo's lies below it.
    fn data_dir_of(&self, command: &str) -> PathBuf {
        let (env, words) = split_env(command);
        let base = env
            .iter()
            .find(|(name, _)| name == "USAGE_DATA_DIR")
            .map(|(_, value)| PathBuf::from(self.localise(value)))
            .unwrap_or_else(|| self.work.join("data"));
        if words.iter().any(|word| word == "demo") {
            base.join("demo")
        } else {
            base
        }
    }

    /// Runs a command to completion; `ok` says which exit codes count as success.
    fn run_to_end(&self, document: &str, command: &str, ok: &[i32]) -> String {
        let localised = self.localise(command);
        let mut child = self
            .shell(&localised)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "{document}: `{command}` did not finish"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("output");
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            ok.contains(&code),
            "{document}: `{command}` (run as `{localised}`) exited {code}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn ensure_server(&mut self, document: &str) {
        if self.server.is_none() {
            self.start_server(document, "cpamp-server");
        }
    }

    /// Runs one documented command the way its kind needs.
    fn run(&mut self, document: &str, command: &str) {
        let (_, words) = split_env(command);
        let program = words.first().map(String::as_str).unwrap_or_default();
        let program = if program == "cargo" && command.contains("run --release -p cpamp-server") {
            "cargo-run"
        } else {
            program
        };
        match program {
            "cargo-run" => {
                // `cargo run --release -p cpamp-server [-- args]` is the binary with those args.
                let args = command.split(" -- ").nth(1).unwrap_or("");
                self.run(document, format!("cpamp-server {args}").trim());
            }
            word if is_server_binary(word) => {
                let subcommand = words
                    .iter()
                    .skip(1)
                    .find(|word| !word.starts_with('-'))
                    .map(String::as_str);
                match subcommand {
                    None | Some("serve") | Some("demo") => self.start_server(document, command),
                    Some("doctor") => {
                        self.ensure_server(document);
                        self.run_to_end(document, command, &[0, 1]);
                    }
                    Some("reset-admin-key")
                    | Some("reset-admin-password")
                    | Some("cleanup-derived") => {
                        self.prepare_database(document, command);
                        self.stop_server();
                        let stdout = self.run_to_end(document, command, &[0]);
                        let printed = stdout
                            .split("New admin key: ")
                            .nth(1)
                            .and_then(|rest| rest.split_whitespace().next());
                        if let Some(key) = printed {
                            let db_dir = words
                                .iter()
                                .position(|word| word == "--db-path")
                                .and_then(|at| words.get(at + 1))
                                .and_then(|path| {
                                    Path::new(&self.localise(path))
                                        .parent()
                                        .map(Path::to_path_buf)
                                })
                                .unwrap_or_else(|| self.data_dir_of(command));
                            self.admin_keys.insert(db_dir, key.to_string());
                        }
                    }
                    Some(_) => {
                        self.run_to_end(document, command, &[0]);
                    }
                }
            }
            "curl" => {
                self.ensure_server(document);
                let checked = command.replacen("curl ", "curl -fsS ", 1);
                self.run_to_end(document, &checked, &[0]);
            }
            _ => panic!(
                "{document}: `{command}` is neither run by this test nor listed in VERIFIED_OTHERWISE with its check"
            ),
        }
    }

    /// An offline tool needs a database: the one at its `--db-path`, else the default.
    fn prepare_database(&mut self, document: &str, command: &str) {
        // Paths as the document writes them; `localise` moves them when running.
        let (env, words) = split_env(command);
        let db_path = words
            .iter()
            .position(|word| word == "--db-path" || word == "-db-path")
            .and_then(|at| words.get(at + 1));
        let exists = match db_path {
            Some(path) => Path::new(&self.localise(path)).is_file(),
            None => self.server.is_some() || self.work.join("data/usage.sqlite").is_file(),
        };
        if exists {
            return;
        }
        // Create it the way an operator would have: by running the server once there.
        let data_dir = db_path.map(|path| Path::new(path).parent().expect("parent").to_path_buf());
        let prefix = env
            .iter()
            .map(|(name, value)| format!("{name}={value} "))
            .collect::<String>();
        let start = match data_dir {
            Some(dir) => format!("{prefix}USAGE_DATA_DIR={} cpamp-server", dir.display()),
            None => format!("{prefix}cpamp-server"),
        };
        self.start_server(document, &start);
        self.stop_server();
    }
}

#[test]
fn every_documented_command_is_run_or_verified_otherwise() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut seen_listed = Vec::new();
    let mut ran = 0;
    for document in DOCUMENTS {
        let text = std::fs::read_to_string(root.join(document))
            .unwrap_or_else(|error| panic!("{document}: {error}"));
        let mut runner = Runner::new();
        for command in commands(&text) {
            if let Some((listed, _)) = VERIFIED_OTHERWISE
                .iter()
                .find(|(listed, _)| *listed == command)
            {
                seen_listed.push(*listed);
                continue;
            }
            runner.run(document, &command);
            ran += 1;
        }
        runner.stop_server();
    }
    for (listed, how) in VERIFIED_OTHERWISE {
        assert!(
            seen_listed.contains(listed),
            "VERIFIED_OTHERWISE lists `{listed}` ({how}), which no document shows any more: remove it"
        );
    }
    assert!(ran >= 10, "only {ran} commands ran");
}

#[test]
fn commands_are_read_from_shell_blocks_only() {
    let markdown = "```sh\ncargo run -p x          # comment\nA=1 \\\n  b --c\n# only a comment\n```\n```text\nnot a command\n```\n";
    assert_eq!(commands(markdown), ["cargo run -p x", "A=1 b --c"]);
    let (env, rest) = split_env("CPA_MANAGER_ADMIN_KEY='k v' ./cpa-manager-plus reset-admin-key");
    assert_eq!(
        env,
        [("CPA_MANAGER_ADMIN_KEY".to_string(), "k v".to_string())]
    );
    assert_eq!(rest, ["./cpa-manager-plus", "reset-admin-key"]);
}
