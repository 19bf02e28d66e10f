//! `cpamp-server export`, `import`, `backup` and `restore`.
//!
//! Export, import and backup work either way round: with the server stopped they
//! open the database directly (taking the process lock, like the server); while
//! the server runs (it holds the lock) they go through its API with the admin
//! key. Restore needs the server stopped.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use cpamp_api::transfer::backup::{self, DataKeySource, Manifest};
use cpamp_api::transfer::import::{ImportFailure, ImportProgress, ImportResult, run_import};
use cpamp_domain::ports::{EventSelection, EventStream, ExportChunks};
use cpamp_domain::transfer::export::ExportFormat;
use cpamp_storage::{Options, SqliteStore};
use http_body_util::BodyExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::config::{self, Settings};
use crate::lock::{self, ProcessLock};
use crate::remote::{self, Remote};
use crate::startup::now_ms;

/// How to reach the running server when it holds the lock.
#[derive(Debug, Clone, Default)]
pub struct Online {
    pub admin_key: Option<String>,
    pub server_url: Option<String>,
}

/// `cpamp-server export` options.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// `None` or `-`: standard output.
    pub out: Option<PathBuf>,
    pub selection: EventSelection,
    pub format: Option<ExportFormat>,
}

enum Mode {
    Offline(ProcessLock),
    Online(Remote),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start runtime")
}

/// Offline when the lock is free, online when the running server holds it.
fn mode(settings: &Settings, online: &Online, what: &str) -> anyhow::Result<Mode> {
    match lock::acquire(&settings.db_path) {
        Ok(lock) => Ok(Mode::Offline(lock)),
        Err(error) if lock::held_elsewhere(&error) => {
            let key = remote::admin_key(settings, online.admin_key.clone(), what)
                .map_err(|message| anyhow!(message))?;
            let url = remote::server_url(settings, online.server_url.clone());
            Ok(Mode::Online(Remote::new(url, key)))
        }
        Err(error) => Err(error),
    }
}

async fn open_existing(lock: &ProcessLock) -> anyhow::Result<SqliteStore> {
    let path = &lock.db_path;
    if !path.is_file() {
        bail!(
            "SQLite database not found at {}; pass --db-path or set USAGE_DATA_DIR/USAGE_DB_PATH as for the server",
            path.display()
        );
    }
    if !cpamp_storage::has_manager_tables(path)
        .await
        .map_err(|error| anyhow!("{error}"))?
    {
        bail!(
            "SQLite database at {} does not look like a CPA Manager Plus Manager Server database",
            path.display()
        );
    }
    SqliteStore::open(Options::new(path))
        .await
        .context("open sqlite")
}

fn settings(db_path: Option<PathBuf>) -> anyhow::Result<Settings> {
    let mut settings = config::load(&config::Sources::from_process(false))?;
    if let Some(path) = db_path {
        settings.db_path = path;
    }
    Ok(settings)
}

fn bar(total: Option<u64>, unit: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        format!(
            "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}})"
        )
    } else {
        format!("{{spinner}} [{{elapsed_precise}}] {{pos}} {unit} ({{per_sec}})")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn byte_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn output(out: &Option<PathBuf>) -> anyhow::Result<(Box<dyn Write + Send>, String)> {
    match out {
        Some(path) if path.as_os_str() != "-" => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("create {}", path.display()))?;
            Ok((
                Box::new(std::io::BufWriter::with_capacity(1024 * 1024, file)),
                path.display().to_string(),
            ))
        }
        _ => Ok((
            Box::new(std::io::BufWriter::with_capacity(
                1024 * 1024,
                std::io::stdout(),
            )),
            "standard output".to_string(),
        )),
    }
}

/// The export's query string for the API.
fn export_query(options: &ExportOptions) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let selection = &options.selection;
    if let Some(from) = selection.from_ms {
        pairs.push(("from_ms".into(), from.to_string()));
    }
    if let Some(to) = selection.to_ms {
        pairs.push(("to_ms".into(), to.to_string()));
    }
    for model in &selection.models {
        pairs.push(("model".into(), model.clone()));
    }
    for hash in &selection.api_key_hashes {
        pairs.push(("api_key_hash".into(), hash.clone()));
    }
    if let Some(limit) = selection.newest {
        pairs.push(("limit".into(), limit.to_string()));
    }
    if options.format == Some(ExportFormat::Csv) {
        pairs.push(("format".into(), "csv".into()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
        .collect();
    format!("?{}", encoded.join("&"))
}

fn percent_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `cpamp-server export`.
pub fn export(
    options: ExportOptions,
    online: Online,
    db_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let settings = settings(db_path)?;
    let mode = mode(&settings, &online, "export")?;
    let format = options.format.unwrap_or(ExportFormat::Jsonl);
    let started = Instant::now();
    let runtime = runtime()?;
    let (count, bytes, target) = runtime.block_on(async {
        match mode {
            Mode::Offline(lock) => {
                let store = open_existing(&lock).await?;
                let result = export_offline(&store, &options, format).await;
                store.close().await;
                result
            }
            Mode::Online(remote) => export_online(&remote, &options).await,
        }
    })?;
    eprintln!(
        "Exported {count} events ({:.1} MB) to {target} in {:.1} s.",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn export_offline(
    store: &SqliteStore,
    options: &ExportOptions,
    format: ExportFormat,
) -> anyhow::Result<(u64, u64, String)> {
    let mut export = store
        .open_export(options.selection.clone(), format)
        .await
        .map_err(|error| anyhow!("open the export: {error}"))?;
    let (mut out, target) = output(&options.out)?;
    let progress = bar(Some(export.total()), "events");
    // Lines counted as they arrive; a CSV export's first line is its header.
    let mut lines = 0u64;
    let mut bytes = 0u64;
    let header = u64::from(format == ExportFormat::Csv);
    while let Some(chunk) = export
        .next_chunk()
        .await
        .map_err(|error| anyhow!("read events: {error}"))?
    {
        lines += chunk.bytes().filter(|byte| *byte == b'\n').count() as u64;
        out.write_all(chunk.as_bytes())
            .with_context(|| format!("write {target}"))?;
        bytes += chunk.len() as u64;
        progress.set_position(lines.saturating_sub(header));
    }
    let count = export.total();
    out.flush().with_context(|| format!("write {target}"))?;
    progress.finish_and_clear();
    Ok((count, bytes, target))
}

async fn export_online(
    remote: &Remote,
    options: &ExportOptions,
) -> anyhow::Result<(u64, u64, String)> {
    let path = format!("/v0/management/usage/export{}", export_query(options));
    let response = remote
        .send(http::Method::GET, &path, None)
        .await
        .map_err(|message| anyhow!(message))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|body| body.to_bytes())
            .unwrap_or_default();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        bail!(
            "the server answered {status}: {}",
            remote::error_text(&value)
        );
    }
    let total = response
        .headers()
        .get(cpamp_api::routes::transfer::EXPORT_EVENTS_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let csv = options.format == Some(ExportFormat::Csv);
    let (mut out, target) = output(&options.out)?;
    let progress = bar(total, "events");
    let mut body = response.into_body();
    let mut lines = 0u64;
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|error| anyhow!("the export broke off after {bytes} bytes: {error}"))?;
        if let Ok(data) = frame.into_data() {
            lines += data.iter().filter(|byte| **byte == b'\n').count() as u64;
            bytes += data.len() as u64;
            out.write_all(&data)
                .with_context(|| format!("write {target}"))?;
            progress.set_position(lines.saturating_sub(u64::from(csv)));
        }
    }
    out.flush().with_context(|| format!("write {target}"))?;
    progress.finish_and_clear();
    let count = total.unwrap_or(lines);
    if total.is_some_and(|total| total != lines.saturating_sub(u64::from(csv))) && !csv {
        bail!("the export broke off: {lines} of {count} events arrived; run it again");
    }
    Ok((count, bytes, target))
}

/// A reader that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

/// `cpamp-server import FILE`.
pub fn import(file: PathBuf, online: Online, db_path: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = settings(db_path)?;
    let size = std::fs::metadata(&file)
        .with_context(|| format!("read {}", file.display()))?
        .len();
    if size == 0 {
        bail!("{} is empty: nothing to import", file.display());
    }
    let mode = mode(&settings, &online, "import")?;
    let started = Instant::now();
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        match mode {
            Mode::Offline(lock) => {
                let store = open_existing_or_new(&lock).await?;
                let result = import_offline(&store, &file, size).await;
                store.close().await;
                result
            }
            Mode::Online(remote) => import_online(&remote, &file, size).await,
        }
    })?;
    print_import_summary(&file, &result, started.elapsed());
    Ok(())
}

/// Import may fill a new database (a fresh machine before its first start).
async fn open_existing_or_new(lock: &ProcessLock) -> anyhow::Result<SqliteStore> {
    if lock.db_path.is_file() {
        open_existing(lock).await
    } else {
        SqliteStore::open(Options::new(&lock.db_path))
            .await
            .context("create sqlite")
    }
}

async fn import_offline(
    store: &SqliteStore,
    file: &Path,
    size: u64,
) -> anyhow::Result<ImportResult> {
    let handle = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let read = Arc::new(AtomicU64::new(0));
    let reader = BufReader::with_capacity(
        1024 * 1024,
        Counting {
            inner: handle,
            read: Arc::clone(&read),
        },
    );
    let progress = byte_bar(size);
    let ticker = {
        let progress = progress.clone();
        let read = Arc::clone(&read);
        tokio::spawn(async move {
            loop {
                progress.set_position(read.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let outcome = run_import(store, reader, now_ms(), Arc::new(ImportProgress::default())).await;
    ticker.abort();
    progress.finish_and_clear();
    match outcome.failure {
        None => Ok(outcome.result),
        Some(failure) => Err(import_failure(&failure, &outcome.result)),
    }
}

fn import_failure(failure: &ImportFailure, result: &ImportResult) -> anyhow::Error {
    let stored = result.added + result.skipped;
    match failure {
        ImportFailure::Store(_) => anyhow!(
            "{failure}; {stored} events were stored before it; run the same import again to add the rest"
        ),
        _ if stored > 0 => {
            anyhow!("{failure} ({stored} events read before the problem were imported)")
        }
        _ => anyhow!("{failure}"),
    }
}

async fn import_online(remote: &Remote, file: &Path, size: u64) -> anyhow::Result<ImportResult> {
    let filename = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let create = serde_json::json!({ "filename": filename, "size_bytes": size });
    let (status, session) = remote
        .json(
            http::Method::POST,
            "/v0/management/usage/import-sessions",
            Some((Bytes::from(create.to_string()), "application/json")),
            Duration::from_secs(30),
        )
        .await
        .map_err(|message| anyhow!(message))?;
    if status.as_u16() != 201 {
        bail!(
            "the server refused the import session ({status}): {}",
            remote::error_text(&session)
        );
    }
    let id = session["id"].as_str().unwrap_or_default().to_string();
    let chunk = session["chunk_size_bytes"]
        .as_u64()
        .unwrap_or(4 * 1024 * 1024)
        .max(1);
    let sessions = format!("/v0/management/usage/import-sessions/{id}");
    let mut handle =
        std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    let progress = byte_bar(size);
    let mut offset = 0u64;
    let mut buffer = vec![0u8; usize::try_from(chunk).unwrap_or(4 * 1024 * 1024)];
    while offset < size {
        let want = usize::try_from(chunk.min(size - offset)).unwrap_or(buffer.len());
        handle
            .read_exact(&mut buffer[..want])
            .with_context(|| format!("read {}", file.display()))?;
        let (status, answer) = remote
            .json(
                http::Method::PUT,
                &format!("{sessions}/chunk?offset={offset}"),
                Some((
                    Bytes::copy_from_slice(&buffer[..want]),
                    "application/octet-stream",
                )),
                Duration::from_secs(300),
            )
            .await
            .map_err(|message| anyhow!(message))?;
        if !status.is_success() {
            bail!(
                "uploading at offset {offset} failed ({status}): {}",
                remote::error_text(&answer)
            );
        }
        offset += want as u64;
        progress.set_position(offset);
    }
    progress.finish_and_clear();
    let (status, answer) = remote
        .json(
            http::Method::POST,
            &format!("{sessions}/complete"),
            None,
            Duration::from_secs(60),
        )
        .await
        .map_err(|message| anyhow!(message))?;
    if !status.is_success() {
        bail!(
            "starting the import failed ({status}): {}",
            remote::error_text(&answer)
        );
    }
    let spinner = bar(None, "s importing");
    let started = Instant::now();
    loop {
        let (status, session) = remote
            .json(http::Method::GET, &sessions, None, Duration::from_secs(30))
            .await
            .map_err(|message| anyhow!(message))?;
        if !status.is_success() {
            bail!(
                "reading the import session failed ({status}): {}",
                remote::error_text(&session)
            );
        }
        spinner.set_position(started.elapsed().as_secs());
        let result: Option<ImportResult> = serde_json::from_value(session["result"].clone()).ok();
        match session["status"].as_str().unwrap_or_default() {
            "completed" => {
                spinner.finish_and_clear();
                return result.ok_or_else(|| anyhow!("the server reported no import result"));
            }
            "failed" | "cancelled" => {
                spinner.finish_and_clear();
                let stored = result
                    .as_ref()
                    .map_or(0, |result| result.added + result.skipped);
                bail!(
                    "the import {}: {} ({stored} events stored)",
                    session["status"].as_str().unwrap_or_default(),
                    session["error"].as_str().unwrap_or("no reason given")
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn print_import_summary(file: &Path, result: &ImportResult, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "Imported {} ({}): {} added, {} already present, {} failed, {} unsupported in {seconds:.1} s ({:.0} events/s).",
        file.display(),
        if result.format.is_empty() {
            "-"
        } else {
            &result.format
        },
        result.added,
        result.skipped,
        result.failed,
        result.unsupported,
        result.total as f64 / seconds.max(0.001)
    );
    for warning in result.warnings.iter().flatten() {
        println!("warning: {warning}");
    }
    for error in &result.errors {
        let at = match (error.line, error.element, &error.endpoint) {
            (Some(line), _, _) => format!("line {line}"),
            (_, Some(element), _) => format!("element {element}"),
            (_, _, Some(endpoint)) => format!(
                "{endpoint} / {} / detail {}",
                error.model.as_deref().unwrap_or("-"),
                error
                    .detail
                    .map_or("-".to_string(), |detail| detail.to_string())
            ),
            _ => "-".to_string(),
        };
        println!("failed: {at}: {}", error.error);
    }
    if result.failed > result.errors.len() as u64 {
        println!(
            "({} more failed records not listed)",
            result.failed - result.errors.len() as u64
        );
    }
}

/// `cpamp-server backup --out DIR`.
pub fn backup(out: PathBuf, online: Online, db_path: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = settings(db_path)?;
    let mode = mode(&settings, &online, "the backup")?;
    let runtime = runtime()?;
    let started = Instant::now();
    let manifest = runtime.block_on(async {
        match mode {
            Mode::Offline(lock) => {
                let store = open_existing(&lock).await?;
                let data_key = if settings.data_key.is_empty() {
                    DataKeySource::File(settings.data_key_path.clone())
                } else {
                    DataKeySource::External
                };
                let result = backup::create_backup(&store, &out, &data_key, now_ms()).await;
                store.close().await;
                result.map_err(|error| anyhow!("{error}"))
            }
            Mode::Online(remote) => backup_online(&remote, &out).await,
        }
    })?;
    print_backup(&out, &manifest, started.elapsed());
    Ok(())
}

fn print_backup(out: &Path, manifest: &Manifest, elapsed: Duration) {
    println!(
        "Backup written to {} in {:.1} s: {} events, schema {}.",
        out.display(),
        elapsed.as_secs_f64(),
        manifest.events,
        manifest.schema_version
    );
    for file in &manifest.files {
        println!(
            "  {} ({} bytes, sha256 {})",
            file.name, file.bytes, file.sha256
        );
    }
    if manifest.data_key == "external" {
        println!(
            "The data key comes from CPA_MANAGER_DATA_KEY or CPA_MANAGER_DATA_KEY_FILE and is not in the backup: keep it with the backup."
        );
    }
    println!(
        "Restore with: cpamp-server restore --from {}",
        out.display()
    );
}

async fn backup_online(remote: &Remote, out: &Path) -> anyhow::Result<Manifest> {
    let (status, answer) = remote
        .json(
            http::Method::POST,
            "/usage-service/backups",
            None,
            Duration::from_secs(3600),
        )
        .await
        .map_err(|message| anyhow!(message))?;
    if status.as_u16() != 201 {
        bail!(
            "the server could not write the backup ({status}): {}",
            remote::error_text(&answer)
        );
    }
    let manifest: Manifest = serde_json::from_value(answer).context("read the backup manifest")?;
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty; choose a new directory",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut names: Vec<String> = manifest
        .files
        .iter()
        .map(|file| file.name.clone())
        .collect();
    names.push(backup::MANIFEST_FILE.to_string());
    let total: u64 = manifest.files.iter().map(|file| file.bytes).sum();
    let progress = byte_bar(total);
    for name in names {
        let path = format!("/usage-service/backups/{}/{name}", manifest.name);
        let response = remote
            .send(http::Method::GET, &path, None)
            .await
            .map_err(|message| anyhow!(message))?;
        if !response.status().is_success() {
            bail!("downloading {name} failed ({})", response.status());
        }
        let target = out.join(&name);
        let mut file = {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options
                .open(&target)
                .with_context(|| format!("create {}", target.display()))?
        };
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| anyhow!("downloading {name} broke off: {error}"))?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data)
                    .with_context(|| format!("write {}", target.display()))?;
                progress.inc(data.len() as u64);
            }
        }
        file.sync_all()?;
    }
    progress.finish_and_clear();
    let verified = backup::verify(out)
        .map_err(|error| anyhow!("the downloaded backup does not check out: {error}"))?;
    // The copy now lives in `out`; the server's own copy is not needed.
    let _ = remote
        .json(
            http::Method::DELETE,
            &format!("/usage-service/backups/{}", manifest.name),
            None,
            Duration::from_secs(60),
        )
        .await;
    Ok(verified)
}

/// `cpamp-server restore --from DIR`: the server must be stopped.
pub fn restore(from: PathBuf, db_path: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = settings(db_path)?;
    let manifest = backup::verify(&from).map_err(|error| anyhow!("{error}"))?;
    let runtime = runtime()?;
    let database = from.join(backup::DATABASE_FILE);
    let facts = runtime
        .block_on(cpamp_storage::check_copy(&database))
        .map_err(|error| anyhow!("the backup's database is not usable: {error}"))?;
    let lock = match lock::acquire(&settings.db_path) {
        Ok(lock) => lock,
        Err(error) if lock::held_elsewhere(&error) => {
            bail!(
                "the server is running on {}; stop it, then restore",
                settings.db_path.display()
            )
        }
        Err(error) => return Err(error),
    };
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
    let db = lock.db_path.clone();
    let mut moved = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let current = PathBuf::from(format!("{}{suffix}", db.display()));
        if current.exists() {
            let aside = PathBuf::from(format!("{}.before-restore-{stamp}{suffix}", db.display()));
            std::fs::rename(&current, &aside)
                .with_context(|| format!("move {} aside", current.display()))?;
            moved.push(aside);
        }
    }
    copy_private(&database, &db)?;
    let mut key_note = String::new();
    if manifest.data_key == "included" {
        if settings.data_key.is_empty() {
            let key_path = settings.data_key_path.clone();
            let wanted = std::fs::read(from.join(backup::DATA_KEY_FILE))?;
            match std::fs::read(&key_path) {
                Ok(current) if current == wanted => {}
                Ok(_) => {
                    let aside =
                        PathBuf::from(format!("{}.before-restore-{stamp}", key_path.display()));
                    std::fs::rename(&key_path, &aside)
                        .with_context(|| format!("move {} aside", key_path.display()))?;
                    moved.push(aside);
                    copy_private(&from.join(backup::DATA_KEY_FILE), &key_path)?;
                }
                Err(_) => copy_private(&from.join(backup::DATA_KEY_FILE), &key_path)?,
            }
            key_note = format!("data key restored to {}", key_path.display());
        } else {
            key_note = "CPA_MANAGER_DATA_KEY(_FILE) is set, so the backup's data.key was not copied; it must be the key the backup was taken with".to_string();
        }
    }
    drop(lock);
    println!(
        "Restored {} events (schema {}) from {} into {}.",
        facts.events,
        facts.schema_version,
        from.display(),
        db.display()
    );
    if !key_note.is_empty() {
        println!("{key_note}.");
    }
    for path in moved {
        println!("The previous file is kept as {}.", path.display());
    }
    println!("Start the server now.");
    Ok(())
}

/// Copies `from` to `to` through a temporary file (0600), fsynced, renamed into place.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = PathBuf::from(format!("{}.restore-tmp", to.display()));
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut target = options
        .open(&temporary)
        .with_context(|| format!("create {}", temporary.display()))?;
    let mut source =
        std::fs::File::open(from).with_context(|| format!("open {}", from.display()))?;
    std::io::copy(&mut source, &mut target).with_context(|| format!("copy {}", from.display()))?;
    target.sync_all()?;
    drop(target);
    std::fs::rename(&temporary, to).with_context(|| format!("move into {}", to.display()))?;
    Ok(())
}
