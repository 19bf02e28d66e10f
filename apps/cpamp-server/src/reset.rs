//! `cpamp-server reset-admin-key`: replace the admin key offline (server-core §2.9).
//!
//! Takes the same process lock as the server, so it refuses to run while the server
//! is using the database. Touches nothing but the admin credential: the CPA connection,
//! `data.key` and usage data stay as they are. A key given on the command line or in a
//! file is never echoed; a generated key is printed once.

use std::path::PathBuf;

use anyhow::{Context, bail};
use cpamp_api::auth;
use cpamp_domain::keys;
use cpamp_storage::{Options, SqliteStore};

use crate::{config, lock, startup};

pub fn run(
    admin_key: Option<String>,
    admin_key_file: Option<PathBuf>,
    db_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let provided = match (admin_key, admin_key_file) {
        (Some(_), Some(_)) => bail!("--admin-key and --admin-key-file cannot be used together"),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read admin key file {}", path.display()))?;
            let key = text.trim().to_string();
            if key.is_empty() {
                bail!("admin key file is empty");
            }
            Some(key)
        }
        (Some(key), None) => {
            let key = key.trim().to_string();
            if key.is_empty() {
                bail!("admin key is required");
            }
            Some(key)
        }
        (None, None) => None,
    };
    let db_path = match db_path {
        Some(path) => path,
        None => config::load(&config::Sources::from_process(false))?.db_path,
    };
    if db_path.as_os_str().is_empty() {
        bail!("SQLite database path is empty; pass --db-path");
    }
    if db_path.is_dir() {
        bail!("SQLite database path is a directory: {}", db_path.display());
    }
    let metadata = std::fs::metadata(&db_path).map_err(|_| {
        anyhow::anyhow!(
            "SQLite database not found at {}; pass --db-path or run the command from the configured Manager Server environment",
            db_path.display()
        )
    })?;
    if metadata.len() == 0 {
        bail!(
            "SQLite database at {} is empty; verify --db-path points to the Manager Server data file",
            db_path.display()
        );
    }
    let mut header = [0u8; 16];
    std::fs::File::open(&db_path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header))
        .with_context(|| format!("read {}", db_path.display()))?;
    if &header != b"SQLite format 3\0" {
        bail!(
            "SQLite database at {} does not look like a CPA Manager Plus Manager Server database",
            db_path.display()
        );
    }
    let lock = lock::acquire(&db_path)
        .context("acquire admin reset lock; stop Manager Server and retry")?;

    let (key, generated) = match provided {
        Some(key) => (key, false),
        None => (keys::generate_admin_key(&mut rand::rng()), true),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    runtime.block_on(async {
        let known = cpamp_storage::has_manager_tables(&lock.db_path)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        if !known {
            bail!(
                "SQLite database at {} does not look like a CPA Manager Plus Manager Server database",
                lock.db_path.display()
            );
        }
        let store = SqliteStore::open(Options::new(&lock.db_path))
            .await
            .context("open sqlite")?;
        let source = if generated { "cli-generated" } else { "cli" };
        let result = auth::replace_credential(&store, &key, source, startup::now_ms(), true).await;
        store.close().await;
        result
            .map(|_| ())
            .map_err(|error| anyhow::anyhow!("{error}"))
    })?;
    drop(lock);

    println!("CPA Manager Plus admin key reset.");
    if generated {
        println!("New admin key: {key}");
        println!("Save this value now. It will not be shown again.");
    } else {
        println!("Use the provided admin key to log in after restarting Manager Server.");
    }
    Ok(())
}
