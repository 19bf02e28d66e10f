//! The command line as an operator meets it: every subcommand's help, the earlier
//! server's flag spelling, the demo's way in, and configuration the Go server accepted.

use std::time::Duration;

use crate::support::{ServerProcess, client, command};

fn run(args: &[&str]) -> (bool, String, String) {
    let data = tempfile::tempdir().expect("tempdir");
    let output = command(data.path(), &[]).args(args).output().expect("run");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The subcommands `cpamp-server --help` lists.
fn subcommands() -> Vec<String> {
    let (ok, help, _) = run(&["--help"]);
    assert!(ok);
    help.split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every subcommand's `--help` opens with its own description of what it does, longer
/// than a title, before the usage line.
#[test]
fn every_subcommand_says_what_it_does() {
    let names = subcommands();
    for expected in [
        "serve",
        "demo",
        "config",
        "reset-admin-key",
        "doctor",
        "cleanup-derived",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
    let mut seen = Vec::new();
    for name in &names {
        let (ok, help, stderr) = run(&[name, "--help"]);
        assert!(ok, "{name} --help: {stderr}");
        let description = help.split("Usage:").next().unwrap_or("").trim().to_string();
        assert!(
            description.split_whitespace().count() >= 8,
            "`cpamp-server {name} --help` does not say what it does:\n{help}"
        );
        assert!(
            !seen.contains(&description),
            "{name} shares its help text:\n{description}"
        );
        seen.push(description);
    }
    let (_, help, _) = run(&["cleanup-derived", "--help"]);
    assert!(help.contains("nothing is ever pending"), "{help}");
    let (_, help, _) = run(&["doctor", "--help"]);
    assert!(help.contains("monitoring has no data"), "{help}");
}

/// Scripts written for the earlier server pass flags with one dash (Go's flag package).
#[test]
fn the_earlier_single_dash_flags_work() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(data.path(), &[]);
    assert!(server.terminate().success());
    let db = data.path().join("usage.sqlite");
    let db_text = db.display().to_string();
    let output = command(data.path(), &[])
        .args([
            "reset-admin-key",
            "-db-path",
            &db_text,
            "-admin-key=cmp_admin_single_dash",
        ])
        .output()
        .expect("reset");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("admin key reset"));

    let server = ServerProcess::start(data.path(), &[]);
    let status = client()
        .get(server.url("/usage-service/config"))
        .bearer_auth("cmp_admin_single_dash")
        .send()
        .expect("config");
    assert_eq!(status.status(), 200);
    assert!(server.terminate().success());
}

fn demo_key(server: &ServerProcess) -> String {
    assert!(
        server.wait_for_log("log in with the CPAMP Admin Key", Duration::from_secs(20)),
        "the demo printed no way in:\n{}",
        server.log_text()
    );
    server
        .log_text()
        .split("log in with the CPAMP Admin Key ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("key after the phrase")
        .to_string()
}

/// A second demo start prints the same working key again, and the demo never touches
/// the real database in the data directory.
#[test]
fn the_demo_prints_a_working_key_on_every_start() {
    let data = tempfile::tempdir().expect("tempdir");
    let first = ServerProcess::start_with_args(data.path(), &["demo"], &[]);
    let key = demo_key(&first);
    assert!(first.terminate().success());

    let second = ServerProcess::start_with_args(data.path(), &["demo"], &[]);
    assert_eq!(
        demo_key(&second),
        key,
        "the demo key changed between starts"
    );
    let config = client()
        .get(second.url("/usage-service/config"))
        .bearer_auth(&key)
        .send()
        .expect("config");
    assert_eq!(config.status(), 200, "the printed demo key does not log in");
    assert!(second.terminate().success());
    assert!(data.path().join("demo/usage.sqlite").is_file());
    assert!(
        !data.path().join("usage.sqlite").exists(),
        "the demo wrote the real database"
    );

    // A reset demo credential is set back to the printed key on the next start.
    let reset = command(data.path(), &[])
        .args(["reset-admin-key", "--db-path"])
        .arg(data.path().join("demo/usage.sqlite"))
        .output()
        .expect("reset");
    assert!(reset.status.success());
    let third = ServerProcess::start_with_args(data.path(), &["demo"], &[]);
    assert_eq!(demo_key(&third), key);
    let config = client()
        .get(third.url("/usage-service/config"))
        .bearer_auth(&key)
        .send()
        .expect("config");
    assert_eq!(config.status(), 200);
    assert!(third.terminate().success());

    // A directory holding a database the demo did not create is refused.
    let real = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(real.path(), &[]);
    assert!(server.terminate().success());
    let output = command(data.path(), &[])
        .arg("demo")
        .arg("--data-dir")
        .arg(real.path())
        .output()
        .expect("demo");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("holds a database that the demo did not create"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Settings the Go server read leniently or does not apply here start the server with a
/// warning that names them.
#[test]
fn configuration_the_earlier_server_accepted_starts_with_named_warnings() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(
        data.path(),
        &[
            ("USAGE_RESP_TLS_SKIP_VERIFY", "enabled"),
            ("USAGE_BATCH_SIZE", "lots"),
            ("CPA_MANAGER_PPROF_ADDR", "127.0.0.1:6060"),
        ],
    );
    let log = server.log_text();
    for expected in [
        "USAGE_RESP_TLS_SKIP_VERIFY is \"enabled\"",
        "USAGE_BATCH_SIZE must be a positive integer",
        "CPA_MANAGER_PPROF_ADDR=\"127.0.0.1:6060\" is accepted but not applied",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
    assert!(server.terminate().success());
}
