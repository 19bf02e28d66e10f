//! `cpamp-server reset-admin-key`: refuses beside a running server, replaces the key
//! when it is stopped, and the old key stops working.

use std::time::Duration;

use crate::support::{ADMIN_KEY, ServerProcess, client, command};

fn config_status(server: &ServerProcess, key: &str) -> u16 {
    client()
        .put(server.url("/usage-service/config"))
        .bearer_auth(key)
        .json(&serde_json::json!({"config": {"collector": {"enabled": false}}}))
        .send()
        .expect("put")
        .status()
        .as_u16()
}

#[test]
fn reset_refuses_while_running_and_replaces_the_key_when_stopped() {
    let data = tempfile::tempdir().expect("tempdir");
    let db = data.path().join("usage.sqlite");
    let db_text = db.display().to_string();
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    assert_eq!(config_status(&server, ADMIN_KEY), 200);

    let output = command(data.path(), &[])
        .args(["reset-admin-key", "--db-path", &db_text])
        .output()
        .expect("reset");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("acquire admin reset lock; stop Manager Server and retry"),
        "{stderr}"
    );
    assert!(server.terminate().success());

    // Generated key: printed once on stdout.
    let output = command(data.path(), &[])
        .args(["reset-admin-password", "--db-path", &db_text])
        .output()
        .expect("reset");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("CPA Manager Plus admin key reset."),
        "{stdout}"
    );
    let generated = stdout
        .split("New admin key: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("new key")
        .to_string();
    assert!(
        generated.starts_with("cmp_admin_") && generated.len() == 42,
        "{generated}"
    );

    // A provided key from a file is never echoed.
    let key_file = data.path().join("new-admin-key");
    let provided = "cpamp_ProvidedByOperator0123456789abcd";
    std::fs::write(&key_file, format!("{provided}\n")).expect("write");
    let output = command(data.path(), &[])
        .args(["reset-admin-key", "--db-path", &db_text, "--admin-key-file"])
        .arg(&key_file)
        .output()
        .expect("reset");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("Use the provided admin key to log in after restarting Manager Server.")
    );
    assert!(!stdout.contains(provided));

    let output = command(data.path(), &[])
        .args([
            "reset-admin-key",
            "--admin-key",
            "a",
            "--admin-key-file",
            "b",
        ])
        .output()
        .expect("reset");
    assert!(!output.status.success());

    // The env seed is ignored once a credential exists; the old keys stop working.
    let server = ServerProcess::start(data.path(), &[("CPA_MANAGER_ADMIN_KEY", ADMIN_KEY)]);
    assert!(server.wait_for_log("admin credential initialized", Duration::from_secs(5)));
    assert_eq!(config_status(&server, ADMIN_KEY), 401);
    assert_eq!(config_status(&server, &generated), 401);
    assert_eq!(config_status(&server, provided), 200);
    assert!(server.terminate().success());

    let missing = command(data.path(), &[])
        .args(["reset-admin-key", "--db-path"])
        .arg(data.path().join("nope.sqlite"))
        .output()
        .expect("reset");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("SQLite database not found at"), "{stderr}");
}

#[test]
fn reset_refuses_a_sqlite_file_that_is_not_a_manager_database() {
    let data = tempfile::tempdir().expect("tempdir");
    let other = data.path().join("other.sqlite");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=rwc", other.display());
        let mut connection = sqlx::SqliteConnection::connect(&url).await.expect("create");
        sqlx::query("CREATE TABLE notes (body TEXT)")
            .execute(&mut connection)
            .await
            .expect("table");
        connection.close().await.expect("close");
    });
    let before = std::fs::read(&other).expect("read");

    let output = command(data.path(), &[])
        .args(["reset-admin-key", "--db-path", &other.display().to_string()])
        .output()
        .expect("reset");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not look like a CPA Manager Plus Manager Server database"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&other).expect("read"),
        before,
        "the file must stay untouched"
    );
}
