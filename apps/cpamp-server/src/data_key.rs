//! Loading or creating the data key (server-core §2.7).
//!
//! Order: `CPA_MANAGER_DATA_KEY` / `_FILE` / config `dataKeyFile` material (never written
//! to disk), else the key file at `dataKeyPath` (`<dataDir>/data.key`), else a new file
//! with 32 random bytes (mode 0600, directory 0700 when it has to be created).
//!
//! Unlike the Go server, a key file that is not a data key does not stop the server:
//! it is kept beside as `data.key.unusable-<ms>` (nothing is deleted), a new key is
//! created, and the saved CPA connection shows up as "needs to be saved again" in
//! `/usage-service/info`. A key file that exists but cannot be read (permissions) is
//! still fatal, because replacing it would hide a deployment mistake.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use cpamp_api::state::{DataKeyOrigin, DataKeyState};
use cpamp_domain::crypto::DataKey;

use crate::config::Settings;

pub fn load(settings: &Settings, now_ms: i64) -> anyhow::Result<DataKeyState> {
    if !settings.data_key.is_empty() {
        return Ok(DataKeyState::new(
            DataKey::from_material(settings.data_key.expose()),
            DataKeyOrigin::Env,
        ));
    }
    let path = settings.data_key_path.as_path();
    match std::fs::read_to_string(path) {
        Ok(text) => match DataKey::parse_file(&text) {
            Ok(key) => Ok(DataKeyState::new(key, DataKeyOrigin::File)),
            Err(error) => {
                let aside = path.with_file_name(format!(
                    "{}.unusable-{now_ms}",
                    path.file_name()
                        .map(|name| name.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "data.key".to_string())
                ));
                std::fs::rename(path, &aside).with_context(|| {
                    format!(
                        "load data key: {} is unusable ({error}) and cannot be moved aside; fix or remove it",
                        path.display()
                    )
                })?;
                tracing::warn!(
                    "data key at {} is unusable ({error}); kept it as {} and created a new one. \
                     A saved CPA Management Key cannot be read any more: open /management.html and save the CPA connection again",
                    path.display(),
                    aside.display()
                );
                create(path)
            }
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(error) => bail!(
            "load data key: cannot read {}: {error}; fix its permissions or set CPA_MANAGER_DATA_KEY_PATH",
            path.display()
        ),
    }
}

fn create(path: &Path) -> anyhow::Result<DataKeyState> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        && !parent.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(parent)
            .with_context(|| format!("load data key: create {}", parent.display()))?;
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let key = DataKey::from_bytes(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("load data key: create {}", path.display()))?;
    file.write_all(key.file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("load data key: write {}", path.display()))?;
    tracing::info!("CPA Manager Plus data key created at {}", path.display());
    Ok(DataKeyState::new(key, DataKeyOrigin::Created))
}
