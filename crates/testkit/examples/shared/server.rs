//! Starting the release server for a benchmark: on port 0, with its stderr drained on
//! a thread (so it never blocks on a full pipe) and its `ERROR` lines echoed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `binary` with `env` (plus `HTTP_ADDR=127.0.0.1:0`) and returns the child
/// and its base URL once it logs the address it listens on.
pub fn spawn(binary: &Path, env: &[(&str, &std::ffi::OsStr)]) -> (Child, String) {
    let mut command = Command::new(binary);
    command
        .env("HTTP_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("start {}: {error}", binary.display()));
    let stderr = child.stderr.take().expect("stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = sender.send(rest.split_whitespace().next().unwrap_or("").to_string());
            } else if line.contains("ERROR") {
                eprintln!("server: {line}");
            }
        }
    });
    let addr = receiver
        .recv_timeout(Duration::from_secs(1800))
        .expect("the server reports its address");
    (child, format!("http://{addr}"))
}
